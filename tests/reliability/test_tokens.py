"""Bad tokens, end to end: every one is a 401 on each way a token reaches the server.

A token travels four ways: the WebSocket handshake with ``Authorization: Bearer`` or
``?token=``, and the REST history route with the same two. Each bad token below is
tried on all four against a real server (``python -m server``) and must get a 401 with
``{"error": "unauthorized"}``; a token the server issued, and tokens just inside the
leeway, must get through on all four (so the 401s are not the harness failing).

Times are passed through the tokens' own claims (``exp``, ``nbf``, ``iat`` relative to
now, around the server's configured leeway); nothing waits for a clock. Tokens the
PyJWT API refuses to make (``alg: none``, RS256 without ``cryptography``, an HMAC key
that is a PEM) are built by hand: base64url of header, payload and signature. The RSA
key of the HS/RS-confusion cases is generated here from the test's seeded ``rng``.

Afterwards no token, good or bad, nor any of its parts, may be in the server's log.
The last test checks that every secret the server compares (the admin token, the
password hash, the token signature) goes through ``hmac.compare_digest``.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import hashlib
import hmac
import json
import math
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Request, Response
from websockets.sync.client import connect

from chatcap.scenario import load_scenario
from server.app import ChatServer
from server.auth import MAX_TOKEN_BYTES, Authenticator, AuthError, TokenIssuer, UserStore
from server.http import HttpContext, admin_auth
from tests.reliability.conftest import Record
from tests.server.conftest import ADMIN_TOKEN, ROOT, SECRET, scaled
from tests.server.support_chat import ServerProcess
from tests.server.test_auth import b64json, b64url

Start = Callable[..., ServerProcess]
Status = dict[str, int]

PATHS = ("ws header", "ws query", "rest header", "rest query")
HISTORY = "/api/v1/rooms/lobby/messages"
SUBPROTOCOL = "chat.v1.json"
INSIDE_S = 1.0  # how far inside (or beyond) the leeway the edge tokens sit


@pytest.fixture(scope="module")
def server_issuer() -> TokenIssuer:
    """The issuer exactly as the server builds it: its issuer, audience and leeway."""
    scenario = load_scenario(ROOT / "scenarios" / "smoke.toml")
    return ChatServer(scenario, env={"CHATCAP_JWT_SECRET": SECRET}).tokens


# ------------------------------------------------------------------------ building tokens


def hand_made(
    header: dict[str, Any], payload: Any, key: bytes | None, digest: str = "sha256"
) -> str:
    """``header.payload.signature`` with an HMAC over the first two (none when key is None)."""
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    if key is None:
        return signing_input + "."
    mac = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(mac)}"


class RsaKey:
    """A small RSA key made from a seeded source, enough to sign RS256 by hand."""

    E = 65537
    SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")  # DigestInfo

    def __init__(self, rng: random.Random, bits: int = 2048) -> None:
        while True:
            p, q = _prime(rng, bits // 2), _prime(rng, bits // 2)
            phi = math.lcm(p - 1, q - 1)
            if p != q and math.gcd(self.E, phi) == 1 and (p * q).bit_length() == bits:
                break
        self.n = p * q
        self.d = pow(self.E, -1, phi)
        self.size = (self.n.bit_length() + 7) // 8

    def _padded(self, message: bytes) -> int:
        """EMSA-PKCS1-v1_5 encoding of SHA-256(message) (RFC 8017 §9.2)."""
        t = self.SHA256_PREFIX + hashlib.sha256(message).digest()
        return int.from_bytes(b"\x00\x01" + b"\xff" * (self.size - len(t) - 3) + b"\x00" + t)

    def sign(self, message: bytes) -> bytes:
        return pow(self._padded(message), self.d, self.n).to_bytes(self.size)

    def verifies(self, message: bytes, signature: bytes) -> bool:
        return pow(int.from_bytes(signature), self.E, self.n) == self._padded(message)

    def public_pem(self) -> bytes:
        """SubjectPublicKeyInfo in PEM: what a server would publish as its RS256 key."""
        rsa_key = _der(0x30, _der_int(self.n) + _der_int(self.E))
        algorithm = _der(0x30, bytes.fromhex("06092a864886f70d010101") + b"\x05\x00")
        spki = _der(0x30, algorithm + _der(0x03, b"\x00" + rsa_key))
        b64 = base64.b64encode(spki).decode()
        lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
        return (
            "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"
        ).encode()


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    length = (
        bytes([n])
        if n < 128
        else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8)
    )
    return bytes([tag]) + length + body


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1))


_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]


def _prime(rng: random.Random, bits: int) -> int:
    while True:
        candidate = rng.getrandbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if any(candidate % p == 0 for p in _SMALL_PRIMES):
            continue
        if _probably_prime(rng, candidate):
            return candidate


def _probably_prime(rng: random.Random, n: int, rounds: int = 24) -> bool:
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(rounds):
        x = pow(rng.randrange(2, n - 2), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def rs256(key: RsaKey, header: dict[str, Any], payload: dict[str, Any]) -> str:
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    signature = key.sign(signing_input.encode())
    assert key.verifies(signing_input.encode(), signature)  # a genuine RS256 signature
    return f"{signing_input}.{b64url(signature)}"


SIG = "bad token signature"
ALG = "token algorithm not allowed"
MALFORMED = "malformed token"


def bad_tokens(
    issuer: TokenIssuer, issued: str, rng: random.Random, now: float
) -> dict[str, tuple[str, str]]:
    """Name → (a token the server must refuse, the reason its 401 must give).

    ``issued`` is a token the server made (the tampering cases start from it).
    """
    secret = SECRET.encode()
    leeway = issuer.leeway_s
    good: dict[str, Any] = {
        "sub": "ann",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + 600,
        "iss": issuer.issuer,
        "aud": issuer.audience,
        "jti": f"j{rng.getrandbits(64):x}",
    }

    def claims(**changes: Any) -> dict[str, Any]:
        return {k: v for k, v in {**good, **changes}.items() if v is not None}

    def hs(reason: str, **changes: Any) -> tuple[str, str]:
        """Signed HS256 with the server's own secret: only the claims are wrong."""
        return hand_made({"alg": "HS256", "typ": "JWT"}, claims(**changes), secret), reason

    hs256 = {"alg": "HS256", "typ": "JWT"}
    key = RsaKey(rng)
    pem = key.public_pem()
    head, payload, signature = issued.split(".")
    flip = rng.randrange(len(signature) - 1)  # not the last char: it carries padding bits
    swapped = "A" if signature[flip] != "A" else "B"
    garbage = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-_") for _ in range(40))
    attacker = rng.randbytes(32)
    jwe = [b64json({"alg": "dir", "enc": "A256GCM", "typ": "JWE"}), ""]
    jwe += [b64url(rng.randbytes(n)) for n in (12, 48, 16)]
    return {
        "alg none": (hand_made({"alg": "none", "typ": "JWT"}, claims(), None), ALG),
        "alg None with a valid HS256 signature": (
            hand_made({"alg": "None", "typ": "JWT"}, claims(), secret),
            ALG,
        ),
        "HS512 signed with the right secret": (
            hand_made({"alg": "HS512", "typ": "JWT"}, claims(), secret, "sha512"),
            ALG,
        ),
        "RS256 signed with a generated key": (
            rs256(key, {"alg": "RS256", "typ": "JWT"}, claims()),
            ALG,
        ),
        "HS256 signed with the public key PEM as secret": (hand_made(hs256, claims(), pem), SIG),
        "RS256 header, HMAC with the public key PEM": (
            hand_made({"alg": "RS256", "typ": "JWT"}, claims(), pem),
            ALG,
        ),
        "stripped signature": (f"{head}.{payload}.", SIG),
        "no signature part": (f"{head}.{payload}", MALFORMED),
        "tampered signature": (
            f"{head}.{payload}.{signature[:flip]}{swapped}{signature[flip + 1 :]}",
            SIG,
        ),
        "tampered payload, old signature": (
            f"{head}.{b64json(claims(sub='mallory'))}.{signature}",
            SIG,
        ),
        "signed with another secret": (
            hand_made(hs256, claims(), b"another-secret-" + secret),
            SIG,
        ),
        "kid path traversal, signed with an empty key": (
            hand_made({**hs256, "kid": "../../../../../dev/null"}, claims(), b""),
            SIG,
        ),
        "embedded jwk with the attacker's key": (
            hand_made({**hs256, "jwk": {"kty": "oct", "k": b64url(attacker)}}, claims(), attacker),
            SIG,
        ),
        "JWE-shaped, typ JWE, five parts": (".".join(jwe), MALFORMED),
        "header not a JSON object": (f"{b64url(b'[1]')}.{payload}.{signature}", MALFORMED),
        "expired an hour ago": hs("token expired", exp=int(now) - 3600),
        "expired just beyond the leeway": hs("token expired", exp=now - leeway - 0.001),
        "nbf a minute beyond the leeway": hs("token not yet valid", nbf=now + leeway + 60),
        "iat a minute beyond the leeway": hs(
            "token issued in the future", iat=now + leeway + 60, nbf=None
        ),
        "wrong issuer": hs("wrong token issuer", iss="not-" + issuer.issuer),
        "wrong audience": hs("wrong token audience", aud=issuer.audience + "-admin"),
        "audience as a list": hs("wrong token audience", aud=[issuer.audience]),
        "missing exp": hs("token lacks the 'exp' claim", exp=None),
        "exp Infinity": hs("token claim 'exp' is not a number", exp=math.inf),
        "exp as a string": hs("token claim 'exp' is not a number", exp=str(int(now) + 600)),
        "subject breaking the user-name rule": hs("bad token subject", sub="../admin"),
        "oversized (over MAX_TOKEN_BYTES)": hs(
            f"token longer than {MAX_TOKEN_BYTES} bytes", pad="x" * MAX_TOKEN_BYTES
        ),
        "garbage": (garbage, MALFORMED),
        "empty": ("", "missing bearer token"),
    }


# ------------------------------------------------------------------------ presenting them


def ws_status(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    try:
        with connect(
            url,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers=headers,
            open_timeout=scaled(10),
        ):
            return 101, b""
    except InvalidStatus as exc:
        return exc.response.status_code, bytes(exc.response.body or b"")


def answers(server: ServerProcess, token: str) -> dict[str, tuple[int, str]]:
    """(status, the 401's ``message``) on each of the four paths; a 401 says ``unauthorized``."""
    bearer = {"Authorization": f"Bearer {token}"}
    query = f"?token={quote(token, safe='')}"
    raw = {
        "ws header": ws_status(server.ws_url, bearer),
        "ws query": ws_status(server.ws_url + query, {}),
        "rest header": _rest(server.get(HISTORY, bearer)),
        "rest query": _rest(server.get(HISTORY + query)),
    }
    out = {}
    for path, (status, body) in raw.items():
        message = ""
        if status == 401:
            error = json.loads(body)
            assert error["error"] == "unauthorized", (path, body)
            message = error["message"]
        out[path] = (status, message)
    return out


def statuses(server: ServerProcess, token: str) -> Status:
    return {path: status for path, (status, _) in answers(server, token).items()}


def _rest(answer: tuple[int, dict[str, str], bytes]) -> tuple[int, bytes]:
    return answer[0], answer[2]


def accepted() -> Status:
    return {"ws header": 101, "ws query": 101, "rest header": 200, "rest query": 200}


def refused() -> Status:
    return dict.fromkeys(PATHS, 401)


# ------------------------------------------------------------------------------- tests


@pytest.fixture
def server(start_server: Start) -> Iterator[ServerProcess]:
    yield start_server()


def test_every_bad_token_is_401_on_the_handshake_and_the_rest_route(
    server: ServerProcess, server_issuer: TokenIssuer, rng: random.Random, record: Record
) -> None:
    issued = server.token("ann")
    assert statuses(server, issued) == accepted()
    cases = bad_tokens(server_issuer, issued, rng, time.time())
    assert len(cases) >= 15
    wrong = {}
    for name, (token, reason) in cases.items():
        got = answers(server, token)
        if got != dict.fromkeys(PATHS, (401, reason)):
            wrong[name] = got
    assert wrong == {}, f"not refused with 401 and the expected reason on every path: {wrong}"
    record("bad_tokens", len(cases))
    assert server.proc.poll() is None
    assert_no_token_in_log(server, [issued, *(token for token, _ in cases.values())])


def test_leeway_edges_inside_are_accepted_and_just_outside_refused(
    server: ServerProcess, server_issuer: TokenIssuer
) -> None:
    secret, leeway = SECRET.encode(), server_issuer.leeway_s
    assert leeway / 2 > INSIDE_S  # "inside" must still be past (or future) by most of it

    def token(**offsets_s: float | None) -> str:
        """Valid claims at now, with the named times moved by an offset (None drops one)."""
        now = time.time()
        claims: dict[str, Any] = {
            "sub": "ann",
            "iss": server_issuer.issuer,
            "aud": server_issuer.audience,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
        }
        for name, offset in offsets_s.items():
            claims[name] = None if offset is None else now + offset
        kept = {k: v for k, v in claims.items() if v is not None}
        return hand_made({"alg": "HS256", "typ": "JWT"}, kept, secret)

    # The server expires a token when now >= exp + leeway and refuses it when
    # now + leeway < nbf (or iat). Each token is built right before it is presented, so
    # "exp inside" and the "outside" of nbf/iat hold while four requests take < INSIDE_S;
    # the other three hold whatever the delay.
    edges: dict[str, tuple[dict[str, float | None], Status]] = {
        "exp inside": ({"exp": -leeway + INSIDE_S}, accepted()),
        "exp outside": ({"exp": -leeway - 0.001}, refused()),
        "nbf inside": ({"nbf": leeway, "iat": 0.0}, accepted()),
        "nbf outside": ({"nbf": leeway + INSIDE_S, "iat": 0.0}, refused()),
        "iat inside": ({"iat": leeway, "nbf": None}, accepted()),
        "iat outside": ({"iat": leeway + INSIDE_S, "nbf": None}, refused()),
    }
    presented, got = [], {}
    for name, (offsets_s, _) in edges.items():
        presented.append(tok := token(**offsets_s))
        got[name] = statuses(server, tok)
    assert got == {name: want for name, (_, want) in edges.items()}
    assert_no_token_in_log(server, presented)


def test_a_64_kib_token_is_refused_by_the_http_layer_and_the_server_goes_on(
    server: ServerProcess, rng: random.Random
) -> None:
    """64 KiB is past websockets' 8 KiB line limit: 431 (header) or 414 (query), no 401.

    The request never reaches routing, so the auth code never sees it; what matters is a
    clean HTTP refusal, no log line with the token, and a server that carries on.
    """
    huge = b64url(rng.randbytes(48 * 1024))  # 64 KiB of base64url
    assert len(huge) >= 64 * 1024
    bearer = {"Authorization": f"Bearer {huge}"}
    query = f"?token={huge}"
    got = {
        "ws header": ws_status(server.ws_url, bearer)[0],
        "ws query": ws_status(server.ws_url + query, {})[0],
        "rest header": server.get(HISTORY, bearer)[0],
        "rest query": server.get(HISTORY + query)[0],
    }
    assert got == {"ws header": 431, "ws query": 414, "rest header": 431, "rest query": 414}
    assert statuses(server, server.token("ann")) == accepted()
    assert_no_token_in_log(server, [huge])


def assert_no_token_in_log(server: ServerProcess, tokens: list[str]) -> None:
    log = server.log()
    assert "event=http.request" in log  # the log is there and records requests
    for tok in tokens:
        for part in {tok, *tok.split(".")}:
            if len(part) >= 12:
                assert part not in log, f"a token or token part is in the server log: {part[:24]}…"


# ------------------------------------------------------------------- constant-time compares

SECRET_WORDS = re.compile(
    r"secret|password|passwd|digest|signature|token|hash|hmac|credential", re.I
)


def equality_on_secrets(source: str) -> list[str]:
    """``==`` / ``!=`` comparisons whose source mentions a secret-like name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
        ):
            text = ast.get_source_segment(source, node) or ""
            if SECRET_WORDS.search(text):
                found.append(f"line {node.lineno}: {text}")
    return found


def test_every_secret_is_compared_with_hmac_compare_digest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server_issuer: TokenIssuer
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real_compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real_compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)

    # The admin token (server/http.py, admin_auth).
    passed: list[HttpContext] = []

    async def inner(ctx: HttpContext) -> Response | None:
        passed.append(ctx)
        return None

    guarded = admin_auth(inner)

    def admin(given: str) -> Response | None:
        path = "/api/v1/admin/faults"
        request = Request(path, Headers(Authorization=f"Bearer {given}"))
        app = SimpleNamespace(admin_token=ADMIN_TOKEN)
        return asyncio.run(guarded(HttpContext(app, None, request, path, {})))  # type: ignore[arg-type]

    wrong = ADMIN_TOKEN[:-1] + ("x" if ADMIN_TOKEN[-1] != "x" else "y")
    answer = admin(wrong)
    assert answer is not None and answer.status_code == 403 and not passed
    assert admin(ADMIN_TOKEN) is None and len(passed) == 1
    assert calls == [(wrong.encode(), ADMIN_TOKEN.encode()), (ADMIN_TOKEN.encode(),) * 2]

    # The token signature (PyJWT's HMAC verify, called by TokenIssuer.verify).
    calls.clear()
    now = time.time()
    token, _ = server_issuer.issue("ann", now)
    assert server_issuer.verify(token, now) == "ann"
    signature = token.rsplit(".", 1)[1]
    assert calls == [(base64.urlsafe_b64decode(signature + "="),) * 2]

    # The password hash (users mode: Authenticator → UserStore.check).
    store = UserStore(tmp_path / "users.json")
    store.add_user("ann", "right")
    users = Authenticator("users", store)
    calls.clear()

    def basic(user: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    assert users.check_basic(basic("ann", "right")) == "ann"
    for user, password in [("ann", "wrong"), ("nobody", "right")]:
        with pytest.raises(AuthError):
            users.check_basic(basic(user, password))
    assert len(calls) == 3 and all(len(a) == len(b) == 32 for a, b in calls)

    # And no plain ``==`` on anything secret-like anywhere in the server.
    assert equality_on_secrets("ok = given == secret_token") != []  # the scan does find one
    for path in sorted((ROOT / "server").glob("*.py")):
        assert equality_on_secrets(path.read_text()) == [], path
