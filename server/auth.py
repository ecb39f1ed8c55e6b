"""Who is talking: access tokens, the password file, HTTP Basic and Bearer parsing.

The flow (docs/design.md, "The contracts"): a client trades HTTP Basic credentials for a token
at ``GET /api/v1/token``, then presents the token on the WebSocket handshake
(``Authorization: Bearer …`` or ``?token=`` for browsers) and on the history API.

* :class:`TokenIssuer` issues and verifies HS256 JWTs. Like everything that decides in
  chatcap, it never reads a clock: ``now`` (epoch seconds) is passed in, so tests
  never sleep. PyJWT's own time checks read the wall clock, so they are switched off
  and ``exp``/``nbf``/``iat`` are checked here against ``now`` with the leeway.
* :func:`load_secret` finds the signing secret in the environment.
* :class:`UserStore` is a JSON file of scrypt hashes; :class:`Authenticator` checks
  Basic credentials against it (``auth = "users"``) or accepts any valid user name
  (``auth = "open"``, for demos and load tests only).
* :func:`adduser_main` is the body of ``python -m server adduser``.

Rule of the module: a token, a password or a secret never appears in an exception
message or a log line.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import jwt

__all__ = [
    "MAX_TOKEN_BYTES",
    "AuthError",
    "Authenticator",
    "SecretError",
    "TokenIssuer",
    "UserStore",
    "UserStoreError",
    "adduser_main",
    "bearer_token",
    "load_secret",
    "valid_user_name",
]

MAX_TOKEN_BYTES = 4096
"""Longer tokens are refused before any parsing (ours are ~250 bytes)."""

MIN_SECRET_BYTES = 32
"""HS256 wants a key at least as long as its 32-byte digest (RFC 7518 §3.2)."""

_USER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_ALGORITHMS = ["HS256"]  # pinned: never taken from the token's header
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
_MAX_BASIC_BYTES = 4096


class AuthError(Exception):
    """Authentication failed; ``reason`` is safe to show (it never holds a credential)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def valid_user_name(name: object) -> bool:
    """True for 1–64 characters of ``A-Z a-z 0-9 _ . -``."""
    return isinstance(name, str) and _USER_NAME.fullmatch(name) is not None


# ------------------------------------------------------------------------------ tokens

# PyJWT exception -> our reason. Its messages are not reused: we keep ours fixed.
_JWT_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.InvalidAlgorithmError, "token algorithm not allowed"),
    (jwt.InvalidSignatureError, "bad token signature"),
    (jwt.InvalidIssuerError, "wrong token issuer"),
    (jwt.InvalidAudienceError, "wrong token audience"),
    (jwt.InvalidKeyError, "token key rejected"),
)


def _jwt_reason(exc: jwt.PyJWTError) -> str:
    """A fixed, credential-free reason for a PyJWT failure."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token lacks the {exc.claim!r} claim"
    for kind, reason in _JWT_REASONS:
        if isinstance(exc, kind):
            return reason
    return "malformed token"


def _numeric_date(claims: Mapping[str, Any], name: str) -> float:
    """A time claim as a float; bools, strings and non-finite numbers are refused."""
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError(f"token claim {name!r} is not a number")
    return float(value)


class TokenIssuer:
    """Issues and verifies HS256 access tokens for one secret.

    Claims: ``sub`` (user), ``iat`` = ``nbf`` = ``floor(now)``, ``exp`` =
    ``floor(now + ttl_s)`` (at least one second later), ``iss``, ``aud`` and a random
    ``jti``. Verification pins the algorithm to HS256 (so ``alg: none`` and RS/HS
    confusion fail), requires exp/iat/iss/aud/sub, and applies ``leeway_s`` to the
    time checks: expired when ``now >= exp + leeway``; not yet valid when
    ``now + leeway < nbf``; issued in the future when ``now + leeway < iat``.
    """

    def __init__(
        self,
        secret: bytes,
        *,
        issuer: str = "chatcap",
        audience: str = "chatcap-ws",
        ttl_s: float,
        leeway_s: float = 5.0,
    ) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise SecretError(f"the token secret must be at least {MIN_SECRET_BYTES} bytes")
        if not (math.isfinite(ttl_s) and ttl_s > 0):
            raise ValueError(f"ttl_s must be a finite number > 0, got {ttl_s!r}")
        if not (math.isfinite(leeway_s) and leeway_s >= 0):
            raise ValueError(f"leeway_s must be a finite number >= 0, got {leeway_s!r}")
        self._secret = secret
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s
        self.leeway_s = leeway_s

    def __repr__(self) -> str:  # never show the secret
        return (
            f"TokenIssuer(issuer={self.issuer!r}, audience={self.audience!r}, ttl_s={self.ttl_s})"
        )

    def issue(self, user: str, now: float) -> tuple[str, float]:
        """A token for ``user`` and its expiry time (epoch seconds)."""
        if not valid_user_name(user):
            raise ValueError("user name must match [A-Za-z0-9_.-]{1,64}")
        issued_at = math.floor(now)
        expires_at = max(math.floor(now + self.ttl_s), issued_at + 1)
        claims = {
            "sub": user,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": expires_at,
            "iss": self.issuer,
            "aud": self.audience,
            "jti": secrets.token_urlsafe(16),
        }
        token = jwt.encode(claims, self._secret, algorithm="HS256")
        return token, float(expires_at)

    def verify(self, token: str, now: float) -> str:
        """The user a valid token names; otherwise :class:`AuthError` (``reason`` says why)."""
        claims = self._decode(token)
        self._check_times(claims, now)
        user = claims["sub"]
        if not valid_user_name(user):
            raise AuthError("bad token subject")
        return str(user)

    def _decode(self, token: str) -> dict[str, Any]:
        """Signature, algorithm, required claims, issuer and audience — not the times."""
        if not isinstance(token, str) or not token:
            raise AuthError("missing token")
        if len(token.encode("utf-8", "surrogatepass")) > MAX_TOKEN_BYTES:
            raise AuthError(f"token longer than {MAX_TOKEN_BYTES} bytes")
        try:
            return jwt.decode(
                token,
                self._secret,
                algorithms=_ALGORITHMS,
                issuer=self.issuer,
                audience=self.audience,
                options={
                    "require": _REQUIRED_CLAIMS,
                    "verify_exp": False,  # PyJWT would read the wall clock; see _check_times
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_sub": False,  # checked in verify(): a str matching the name rule
                    "strict_aud": True,
                },
            )
        except jwt.PyJWTError as exc:
            raise AuthError(_jwt_reason(exc)) from None
        except (ValueError, TypeError):  # hostile input PyJWT did not wrap; never leak it
            raise AuthError("malformed token") from None

    def _check_times(self, claims: Mapping[str, Any], now: float) -> None:
        """exp / nbf / iat against the caller's ``now``, with the leeway."""
        leeway_s = self.leeway_s
        if now >= _numeric_date(claims, "exp") + leeway_s:
            raise AuthError("token expired")
        if "nbf" in claims and now + leeway_s < _numeric_date(claims, "nbf"):
            raise AuthError("token not yet valid")
        if now + leeway_s < _numeric_date(claims, "iat"):
            raise AuthError("token issued in the future")


# ------------------------------------------------------------------------------ secret


class SecretError(ValueError):
    """The configured token secret is missing, unreadable or too short."""


def load_secret(env: Mapping[str, str]) -> tuple[bytes, str]:
    """The token secret and where it came from (a line worth logging; never the secret).

    ``CHATCAP_JWT_SECRET`` (the value, UTF-8) or ``CHATCAP_JWT_SECRET_FILE`` (the
    file's bytes, surrounding whitespace stripped); either must give at least 32
    bytes, and setting both is an error. With neither, a random 32-byte secret is
    made: tokens then die with the process and are not shared between processes.
    """
    value = env.get("CHATCAP_JWT_SECRET")
    path = env.get("CHATCAP_JWT_SECRET_FILE")
    if value and path:
        raise SecretError("set CHATCAP_JWT_SECRET or CHATCAP_JWT_SECRET_FILE, not both")
    if value:
        return _long_enough(value.encode("utf-8"), "CHATCAP_JWT_SECRET"), "CHATCAP_JWT_SECRET"
    if path:
        source = f"CHATCAP_JWT_SECRET_FILE ({path})"
        return _long_enough(_read_secret_file(path), source), source
    note = "a random secret made at start (tokens end with this process; set CHATCAP_JWT_SECRET)"
    return secrets.token_bytes(MIN_SECRET_BYTES), note


def _read_secret_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes().strip()
    except OSError as exc:
        raise SecretError(f"cannot read CHATCAP_JWT_SECRET_FILE {path}: {exc.strerror}") from None


def _long_enough(secret: bytes, source: str) -> bytes:
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(
            f"{source} is {len(secret)} bytes; the token secret needs at least {MIN_SECRET_BYTES}"
        )
    return secret


# ------------------------------------------------------------------------------- users


class UserStoreError(ValueError):
    """The password file cannot be read or holds a malformed entry."""


class _ScryptParams(NamedTuple):
    n: int
    r: int
    p: int


_SCRYPT = _ScryptParams(n=2**14, r=8, p=1)
_SALT_BYTES = 16
_HASH_BYTES = 32
_MAX_SCRYPT_N = 2**20  # refuse absurd costs from a hand-edited file
_DUMMY_SALT = b"chatcap-no-user!"  # for unknown users: spend the same time


def _scrypt(password: str, salt: bytes, params: _ScryptParams) -> bytes:
    maxmem = 256 * params.n * params.r * params.p + 2**20
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=maxmem,
        dklen=_HASH_BYTES,
    )


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt_b64$hash_b64`` for a fresh 16-byte salt."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, _SCRYPT)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT.n}${_SCRYPT.r}${_SCRYPT.p}${b64(salt).decode()}${b64(digest).decode()}"


def _parse_hash(encoded: object) -> tuple[_ScryptParams, bytes, bytes]:
    """(params, salt, digest) from a stored hash; ValueError when malformed."""
    if not isinstance(encoded, str):
        raise ValueError("not a string")
    scheme, n, r, p, salt_b64, digest_b64 = encoded.split("$")
    params = _ScryptParams(int(n), int(r), int(p))
    if scheme != "scrypt" or not _sane_params(params):
        raise ValueError("not scrypt with sane parameters")
    salt = base64.b64decode(salt_b64, validate=True)
    digest = base64.b64decode(digest_b64, validate=True)
    if not salt or not digest:
        raise ValueError("empty salt or hash")
    return params, salt, digest


def _sane_params(params: _ScryptParams) -> bool:
    n, r, p = params
    return 1 < n <= _MAX_SCRYPT_N and n & (n - 1) == 0 and 1 <= r <= 64 and 1 <= p <= 16


class UserStore:
    """User names and scrypt password hashes, kept in a JSON file.

    The file is ``{"alice": "scrypt$16384$8$1$<salt b64>$<hash b64>", …}``. It is read
    once here (a missing file means no users yet) and every entry is checked, so a bad
    file fails at start with the user named. :meth:`add_user` rewrites it atomically.
    Hashing costs ~50 ms of CPU by design: callers on an event loop should run
    :meth:`check` in a thread.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._hashes = self._load()

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, name: object) -> bool:
        return name in self._hashes

    def add_user(self, name: str, password: str) -> bool:
        """Add ``name`` or replace its password; True when the user is new."""
        if not valid_user_name(name):
            raise UserStoreError(f"bad user name {name!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        if not password:
            raise UserStoreError("empty password")
        hashes = self._load()  # the file may have changed since we read it
        is_new = name not in hashes
        hashes[name] = hash_password(password)
        self._write(hashes)
        self._hashes = hashes
        return is_new

    def check(self, name: str, password: str) -> bool:
        """True when the password is right; unknown users cost the same scrypt."""
        stored = self._hashes.get(name)
        if stored is None:
            params, salt, expected = _SCRYPT, _DUMMY_SALT, bytes(_HASH_BYTES)
        else:
            params, salt, expected = _parse_hash(stored)
        digest = _scrypt(password, salt, params)
        matches = hmac.compare_digest(digest, expected)
        return matches and stored is not None

    def _load(self) -> dict[str, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise UserStoreError(f"cannot read user file {self.path}: {exc}") from None
        return self._validate(text)

    def _validate(self, text: str) -> dict[str, str]:
        try:
            data = json.loads(text)
        except ValueError:
            raise UserStoreError(f"user file {self.path} is not valid JSON") from None
        if not isinstance(data, dict):
            raise UserStoreError(f"user file {self.path} must hold a JSON object")
        for name, encoded in data.items():
            if not valid_user_name(name):
                raise UserStoreError(f"user file {self.path}: bad user name {name!r}")
            try:
                _parse_hash(encoded)
            except (ValueError, binascii.Error):
                raise UserStoreError(
                    f"user file {self.path}: malformed hash for user {name!r}"
                ) from None
        return data

    def _write(self, hashes: Mapping[str, str]) -> None:
        """Write to a temporary file beside the target, fsync, then rename over it."""
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(dict(sorted(hashes.items())), f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


# ------------------------------------------------------------------------ HTTP headers


def _split_scheme(header_value: str) -> tuple[str, str]:
    """("basic", "dXNl…") from "Basic dXNl…"; the scheme is case-insensitive."""
    scheme, _, rest = header_value.strip().partition(" ")
    return scheme.lower(), rest.strip()


def _decode_basic(header_value: str) -> tuple[str, str]:
    """(user, password) from an ``Authorization: Basic`` value (RFC 7617, UTF-8)."""
    scheme, encoded = _split_scheme(header_value)
    if scheme != "basic" or not encoded or len(encoded) > _MAX_BASIC_BYTES:
        raise AuthError("malformed Basic credentials")
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise AuthError("malformed Basic credentials") from None
    user, colon, password = decoded.partition(":")
    if not colon:
        raise AuthError("malformed Basic credentials")
    return user, password


def bearer_token(headers_authorization: str | None, query_token: str | None) -> str | None:
    """The token from ``Authorization: Bearer …``, else from ``?token=``; None if neither.

    The header wins when both are present. A non-Bearer header is ignored here (the
    caller then reports a missing token).
    """
    if headers_authorization:
        scheme, token = _split_scheme(headers_authorization)
        if scheme == "bearer" and token:
            return token
    return query_token or None


class Authenticator:
    """Checks HTTP Basic credentials in one of the scenario's ``server.auth`` modes.

    ``"users"``: the password must match the :class:`UserStore`.
    ``"open"``: any valid user name is accepted and the password is ignored. It exists
    for demos and load tests (thousands of simulated users, no password file); never
    use it where the users are real.
    """

    MODES = ("open", "users")

    def __init__(self, mode: str, users: UserStore | None = None) -> None:
        if mode not in self.MODES:
            raise ValueError(f"auth mode must be one of {self.MODES}, got {mode!r}")
        if mode == "users" and users is None:
            raise ValueError('auth mode "users" needs a UserStore')
        self.mode = mode
        self.users = users

    bearer_token = staticmethod(bearer_token)

    def check_basic(self, header_value: str | None) -> str:
        """The authenticated user name, or :class:`AuthError`."""
        if not header_value or not header_value.strip():
            raise AuthError("missing credentials")
        user, password = _decode_basic(header_value)
        if not valid_user_name(user):
            raise AuthError("bad user name")
        if self.mode == "users" and not self._password_matches(user, password):
            raise AuthError("wrong user or password")
        return user

    def _password_matches(self, user: str, password: str) -> bool:
        return self.users is not None and self.users.check(user, password)


# ---------------------------------------------------------------------------- adduser


class _UsageError(Exception):
    """An argparse error, reported in one line instead of usage + exit."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print usage and exit
        raise _UsageError(message)


def _adduser_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m server adduser",
        description="add a user (or replace its password) in a chatcap user file",
    )
    p.add_argument("--users", required=True, metavar="FILE", help="JSON user file")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        default=True,
        help="read the password from the first line of stdin (the default)",
    )
    p.add_argument("name", metavar="NAME", help="user name: 1-64 of A-Z a-z 0-9 _ . -")
    return p


def _read_password(stdin: TextIO) -> str:
    """The password: prompted without echo on a terminal, else stdin's first line."""
    if stdin.isatty():
        return getpass.getpass("password: ")
    return stdin.readline().rstrip("\r\n")


def adduser_main(argv: Sequence[str], stdin: TextIO | None = None) -> int:
    """``python -m server adduser --users FILE NAME``; 0 when done, 2 on any error."""
    try:
        args = _adduser_parser().parse_args(list(argv))
        password = _read_password(stdin if stdin is not None else sys.stdin)
        is_new = UserStore(args.users).add_user(args.name, password)
    except (_UsageError, UserStoreError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if is_new:
        print(f"added user {args.name} to {args.users}")
    else:
        print(f"replaced the password of user {args.name} in {args.users}")
    return 0
