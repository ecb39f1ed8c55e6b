"""Tokens, the password file, Basic/Bearer parsing and the adduser command.

Time is passed in: every token test uses plain numbers for ``now`` and never sleeps.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from server.auth import (
    MAX_TOKEN_BYTES,
    Authenticator,
    AuthError,
    SecretError,
    TokenIssuer,
    UserStore,
    UserStoreError,
    adduser_main,
    bearer_token,
    load_secret,
    valid_user_name,
)

SECRET = b"s" * 32 + b"-test-secret"
OTHER_SECRET = b"o" * 32 + b"-other-secret"
NOW = 1_700_000_000.0
TTL_S = 60.0
LEEWAY_S = 5.0
EXP = NOW + TTL_S

# A public key as an HS/RS-confusion attacker would use it: the server's published PEM
# text fed to HMAC as the secret. Its bytes need not be a real key for that attack.
PUBLIC_KEY_PEM = (
    b"-----BEGIN PUBLIC KEY-----\n"
    b"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
    b"4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n"
    b"-----END PUBLIC KEY-----\n"
)


# ----------------------------------------------------------------------------- helpers


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64url(json.dumps(value).encode())


def claims(**changes: Any) -> dict[str, Any]:
    """Valid claims for ``alice`` at NOW; ``name=None`` drops a claim."""
    base: dict[str, Any] = {
        "sub": "alice",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(EXP),
        "iss": "chatcap",
        "aud": "chatcap-ws",
        "jti": "j1",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(
    payload: Any,
    *,
    secret: bytes = SECRET,
    alg: str = "HS256",
    digest: Callable[..., Any] = hashlib.sha256,
) -> str:
    """A JWT built by hand, so the header and signature can say anything."""
    signing_input = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(payload)}"
    signature = hmac.new(secret, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(signature)}"


def unsigned(alg: str) -> str:
    return f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims())}."


def tamper_payload(token: str) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{b64json(claims(sub='mallory'))}.{signature}"


def tamper_signature(token: str) -> str:
    head, _, signature = token.rpartition(".")
    flipped = "A" if signature[0] != "A" else "B"
    return f"{head}.{flipped}{signature[1:]}"


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(SECRET, ttl_s=TTL_S, leeway_s=LEEWAY_S)


# ------------------------------------------------------------------------------ tokens


def test_issued_token_verifies_to_its_user(issuer: TokenIssuer) -> None:
    token, expires_at = issuer.issue("alice", NOW)
    assert expires_at == EXP
    assert issuer.verify(token, NOW) == "alice"


def test_issued_token_carries_the_documented_claims(issuer: TokenIssuer) -> None:
    token, _ = issuer.issue("alice", NOW + 0.75)
    header, payload, _ = token.split(".")
    padded = payload + "=" * (-len(payload) % 4)
    body = json.loads(base64.urlsafe_b64decode(padded))
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "HS256", "typ": "JWT"}
    assert body["sub"] == "alice"
    assert body["iat"] == body["nbf"] == int(NOW)
    assert body["exp"] == int(EXP)
    assert (body["iss"], body["aud"]) == ("chatcap", "chatcap-ws")
    assert isinstance(body["jti"], str) and body["jti"]


def test_two_tokens_for_one_user_differ_by_jti(issuer: TokenIssuer) -> None:
    assert issuer.issue("alice", NOW)[0] != issuer.issue("alice", NOW)[0]


def test_token_expired_within_leeway_is_accepted(issuer: TokenIssuer) -> None:
    token, _ = issuer.issue("alice", NOW)
    assert issuer.verify(token, EXP + LEEWAY_S - 0.001) == "alice"


def test_token_just_beyond_leeway_is_rejected_as_expired(issuer: TokenIssuer) -> None:
    token, _ = issuer.issue("alice", NOW)
    with pytest.raises(AuthError, match=r"^token expired$"):
        issuer.verify(token, EXP + LEEWAY_S)


def test_token_not_yet_valid_within_leeway_is_accepted(issuer: TokenIssuer) -> None:
    token = sign(claims(nbf=int(NOW) + 5, iat=int(NOW) + 5))
    assert issuer.verify(token, NOW) == "alice"


def test_token_ttl_below_a_second_still_lasts_a_second() -> None:
    short = TokenIssuer(SECRET, ttl_s=0.25, leeway_s=0.0)
    token, expires_at = short.issue("alice", NOW)
    assert expires_at == NOW + 1
    assert short.verify(token, NOW + 0.5) == "alice"


BAD_TOKENS: dict[str, tuple[Callable[[TokenIssuer], str], str]] = {
    # name: (build the token, the reason verify() must give)
    "alg none": (lambda i: unsigned("none"), "token algorithm not allowed"),
    "alg None capitalised": (lambda i: unsigned("None"), "token algorithm not allowed"),
    "alg none with a signature": (
        lambda i: unsigned("none") + "c2ln",
        "token algorithm not allowed",
    ),
    "RS256 header signed with the public key as HMAC secret": (
        lambda i: sign(claims(), secret=PUBLIC_KEY_PEM, alg="RS256"),
        "token algorithm not allowed",
    ),
    "HS256 signed with the public key as HMAC secret": (
        lambda i: sign(claims(), secret=PUBLIC_KEY_PEM),
        "bad token signature",
    ),
    "HS512 signed with the right secret": (
        lambda i: sign(claims(), alg="HS512", digest=hashlib.sha512),
        "token algorithm not allowed",
    ),
    "stripped signature": (
        lambda i: i.issue("alice", NOW)[0].rpartition(".")[0] + ".",
        "bad token signature",
    ),
    "signature part missing": (
        lambda i: i.issue("alice", NOW)[0].rpartition(".")[0],
        "malformed token",
    ),
    "tampered payload": (lambda i: tamper_payload(i.issue("alice", NOW)[0]), "bad token signature"),
    "tampered signature": (
        lambda i: tamper_signature(i.issue("alice", NOW)[0]),
        "bad token signature",
    ),
    "signed with another secret": (
        lambda i: TokenIssuer(OTHER_SECRET, ttl_s=TTL_S).issue("alice", NOW)[0],
        "bad token signature",
    ),
    "expired long ago": (lambda i: sign(claims(exp=int(NOW) - 3600)), "token expired"),
    "expired just beyond the leeway": (
        lambda i: sign(claims(exp=int(NOW - LEEWAY_S))),
        "token expired",
    ),
    "not yet valid": (lambda i: sign(claims(nbf=int(NOW) + 60)), "token not yet valid"),
    "issued in the future": (
        lambda i: sign(claims(iat=int(NOW) + 60, nbf=None)),
        "token issued in the future",
    ),
    "wrong issuer": (lambda i: sign(claims(iss="someone-else")), "wrong token issuer"),
    "wrong audience": (lambda i: sign(claims(aud="chatcap-admin")), "wrong token audience"),
    "audience as a list": (lambda i: sign(claims(aud=["chatcap-ws"])), "wrong token audience"),
    "missing exp": (lambda i: sign(claims(exp=None)), "token lacks the 'exp' claim"),
    "missing iat": (lambda i: sign(claims(iat=None)), "token lacks the 'iat' claim"),
    "missing iss": (lambda i: sign(claims(iss=None)), "token lacks the 'iss' claim"),
    "missing aud": (lambda i: sign(claims(aud=None)), "token lacks the 'aud' claim"),
    "missing sub": (lambda i: sign(claims(sub=None)), "token lacks the 'sub' claim"),
    "sub not a string": (lambda i: sign(claims(sub=12345)), "bad token subject"),
    "sub breaking the user-name rule": (
        lambda i: sign(claims(sub="alice bob")),
        "bad token subject",
    ),
    "exp as a string": (
        lambda i: sign(claims(exp="9999999999")),
        "token claim 'exp' is not a number",
    ),
    "exp as a boolean": (lambda i: sign(claims(exp=True)), "token claim 'exp' is not a number"),
    "payload a JSON list": (lambda i: sign(["sub", "alice"]), "malformed token"),
    "garbage": (lambda i: "this is not a token at all", "malformed token"),
    "non-JWT three parts": (lambda i: "abc.def.ghi", "malformed token"),
    "non-ASCII text": (lambda i: "été.☃.🔑", "malformed token"),
    "empty": (lambda i: "", "missing token"),
    "oversized": (
        lambda i: sign(claims(pad="x" * MAX_TOKEN_BYTES)),
        f"token longer than {MAX_TOKEN_BYTES} bytes",
    ),
}


@pytest.mark.parametrize("case", list(BAD_TOKENS), ids=list(BAD_TOKENS))
def test_bad_token_is_rejected_with_its_reason(issuer: TokenIssuer, case: str) -> None:
    build, reason = BAD_TOKENS[case]
    token = build(issuer)
    with pytest.raises(AuthError) as caught:
        issuer.verify(token, NOW)
    assert caught.value.reason == reason


@pytest.mark.parametrize("case", list(BAD_TOKENS), ids=list(BAD_TOKENS))
def test_auth_error_never_contains_the_token_text(issuer: TokenIssuer, case: str) -> None:
    token = BAD_TOKENS[case][0](issuer)
    with pytest.raises(AuthError) as caught:
        issuer.verify(token, NOW)
    message = f"{caught.value} {caught.value!r} {caught.value.args}"
    for part in [token, *token.split(".")]:
        if len(part) >= 6:
            assert part not in message
    assert caught.value.__cause__ is None  # PyJWT's own message is not chained in


def longest_token_within(limit: int) -> str:
    """A valid token padded (with an extra claim) to as close to ``limit`` as base64 allows."""
    pad = (limit - len(sign(claims(pad="")))) * 3 // 4
    while len(sign(claims(pad="x" * (pad + 1)))) <= limit:
        pad += 1
    while len(sign(claims(pad="x" * pad))) > limit:
        pad -= 1
    return sign(claims(pad="x" * pad))


def test_token_at_the_size_limit_is_still_parsed(issuer: TokenIssuer) -> None:
    token = longest_token_within(MAX_TOKEN_BYTES)
    assert MAX_TOKEN_BYTES - 4 < len(token) <= MAX_TOKEN_BYTES
    assert issuer.verify(token, NOW) == "alice"


def test_oversized_token_is_refused_before_parsing(
    issuer: TokenIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("jwt.decode was called")

    monkeypatch.setattr(jwt, "decode", must_not_parse)
    with pytest.raises(AuthError, match="longer than"):
        issuer.verify("a" * (MAX_TOKEN_BYTES + 1), NOW)


def test_issuer_refuses_a_short_secret() -> None:
    with pytest.raises(SecretError, match="at least 32 bytes"):
        TokenIssuer(b"short", ttl_s=TTL_S)


def test_issuer_repr_hides_the_secret(issuer: TokenIssuer) -> None:
    assert SECRET.decode() not in repr(issuer)


def test_issuer_refuses_a_bad_user_name(issuer: TokenIssuer) -> None:
    with pytest.raises(ValueError, match="user name"):
        issuer.issue("not ok", NOW)


# ------------------------------------------------------------------------------ secret


def test_secret_comes_from_the_environment_variable() -> None:
    value = "v" * 40
    secret, source = load_secret({"CHATCAP_JWT_SECRET": value})
    assert secret == value.encode()
    assert source == "CHATCAP_JWT_SECRET"


def test_secret_file_is_read_and_stripped(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"  " + b"f" * 32 + b"\n")
    secret, source = load_secret({"CHATCAP_JWT_SECRET_FILE": str(path)})
    assert secret == b"f" * 32
    assert str(path) in source and "fff" not in source


def test_short_secret_is_refused_without_showing_it() -> None:
    with pytest.raises(SecretError) as caught:
        load_secret({"CHATCAP_JWT_SECRET": "hunter2"})
    assert "hunter2" not in str(caught.value)
    assert "at least 32" in str(caught.value)


def test_missing_secret_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="cannot read"):
        load_secret({"CHATCAP_JWT_SECRET_FILE": str(tmp_path / "absent")})


def test_both_secret_sources_at_once_is_an_error(tmp_path: Path) -> None:
    env = {"CHATCAP_JWT_SECRET": "v" * 40, "CHATCAP_JWT_SECRET_FILE": str(tmp_path)}
    with pytest.raises(SecretError, match="not both"):
        load_secret(env)


def test_without_configuration_a_random_secret_is_made() -> None:
    first, source = load_secret({})
    second, _ = load_secret({})
    assert len(first) == 32 and first != second
    assert "random" in source


# ------------------------------------------------------------------------------- users


def test_user_name_rule() -> None:
    assert valid_user_name("alice.B_0-9")
    assert valid_user_name("a" * 64)
    for bad in ["", "a" * 65, "al ice", "alice:", "élise", "a/b", None, 7]:
        assert not valid_user_name(bad)


def test_password_hash_round_trips_through_the_file(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    assert UserStore(path).add_user("alice", "correct horse") is True
    reloaded = UserStore(path)
    assert reloaded.check("alice", "correct horse")
    assert "alice" in reloaded and len(reloaded) == 1


def test_stored_hash_has_the_documented_format(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    store = UserStore(path)
    store.add_user("alice", "pw")
    store.add_user("bob", "pw")
    entries = json.loads(path.read_text())
    fields = entries["alice"].split("$")
    assert fields[:4] == ["scrypt", "16384", "8", "1"]
    assert len(base64.b64decode(fields[4])) == 16
    assert len(base64.b64decode(fields[5])) == 32
    assert entries["alice"] != entries["bob"]  # fresh salt per user


def test_user_file_is_private_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "users.json"
    UserStore(path).add_user("alice", "pw")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["users.json"]


def test_wrong_password_is_refused(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    store.add_user("alice", "right")
    assert not store.check("alice", "wrong")
    assert not store.check("alice", "")


def test_unicode_password_round_trips(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    store.add_user("alice", "pässwörd 🔑")
    assert store.check("alice", "pässwörd 🔑")
    assert not store.check("alice", "passwort 🔑")


def test_adding_an_existing_user_replaces_the_password(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    store.add_user("alice", "old")
    assert store.add_user("alice", "new") is False
    assert store.check("alice", "new") and not store.check("alice", "old")


def test_password_check_uses_a_constant_time_compare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = UserStore(tmp_path / "users.json")
    store.add_user("alice", "right")
    calls: list[tuple[int, int]] = []
    real_compare = hmac.compare_digest

    def recording_compare(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real_compare(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording_compare)
    assert store.check("alice", "right")
    assert not store.check("alice", "wrong")
    assert calls == [(32, 32), (32, 32)]


def test_unknown_user_costs_the_same_scrypt_and_compare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = UserStore(tmp_path / "users.json")
    store.add_user("alice", "right")
    log: list[str] = []
    real_scrypt, real_compare = hashlib.scrypt, hmac.compare_digest

    def scrypt(password: bytes, **kwargs: Any) -> bytes:
        log.append(f"scrypt n={kwargs['n']}")
        return real_scrypt(password, **kwargs)

    def compare(a: bytes, b: bytes) -> bool:
        log.append("compare")
        return real_compare(a, b)

    monkeypatch.setattr(hashlib, "scrypt", scrypt)
    monkeypatch.setattr(hmac, "compare_digest", compare)
    assert not store.check("mallory", "right")
    assert not store.check("mallory", "")
    assert log == ["scrypt n=16384", "compare"] * 2


def test_missing_user_file_means_no_users(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "absent.json")
    assert len(store) == 0
    assert not store.check("alice", "anything")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["alice"]', "must hold a JSON object"),
        ('{"bad name": "scrypt$16384$8$1$AAAA$AAAA"}', "bad user name 'bad name'"),
        ('{"alice": "md5$abc"}', "malformed hash for user 'alice'"),
        ('{"alice": "scrypt$16384$8$1$!!$AAAA"}', "malformed hash for user 'alice'"),
        ('{"alice": "scrypt$1000$8$1$AAAA$AAAA"}', "malformed hash for user 'alice'"),
        ('{"alice": 42}', "malformed hash for user 'alice'"),
    ],
)
def test_malformed_user_file_is_refused_at_load(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "users.json"
    path.write_text(text)
    with pytest.raises(UserStoreError, match=re.escape(message)):
        UserStore(path)


def test_add_user_refuses_a_bad_name_or_empty_password(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "users.json")
    with pytest.raises(UserStoreError, match="bad user name"):
        store.add_user("no spaces", "pw")
    with pytest.raises(UserStoreError, match="empty password"):
        store.add_user("alice", "")


# ------------------------------------------------------------------------ Basic, Bearer


def basic(user_pass: bytes) -> str:
    return "Basic " + base64.b64encode(user_pass).decode()


@pytest.fixture
def users_auth(tmp_path: Path) -> Authenticator:
    store = UserStore(tmp_path / "users.json")
    store.add_user("alice", "pa:ss wörd")
    return Authenticator("users", store)


def test_basic_credentials_in_users_mode(users_auth: Authenticator) -> None:
    assert users_auth.check_basic(basic("alice:pa:ss wörd".encode())) == "alice"


def test_basic_scheme_is_case_insensitive(users_auth: Authenticator) -> None:
    value = base64.b64encode("alice:pa:ss wörd".encode()).decode()
    assert users_auth.check_basic(f"bAsIc   {value} ") == "alice"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing credentials"),
        ("", "missing credentials"),
        ("   ", "missing credentials"),
        ("Basic", "malformed Basic credentials"),
        ("Bearer abc.def.ghi", "malformed Basic credentials"),
        ("Basic !!!notbase64", "malformed Basic credentials"),
        ("Basic YWxpY2U", "malformed Basic credentials"),  # unpadded base64
        (basic(b"alice-without-colon"), "malformed Basic credentials"),
        (basic(b"\xffalice:pw"), "malformed Basic credentials"),  # not UTF-8
        ("Basic " + "A" * 5000, "malformed Basic credentials"),
        (basic(b":pw"), "bad user name"),
        (basic(b"al ice:pw"), "bad user name"),
        (basic(b"alice:wrong"), "wrong user or password"),
        (basic(b"mallory:pa:ss"), "wrong user or password"),
    ],
)
def test_bad_basic_credentials_are_refused(
    users_auth: Authenticator, header: str | None, reason: str
) -> None:
    with pytest.raises(AuthError) as caught:
        users_auth.check_basic(header)
    assert caught.value.reason == reason


def test_open_mode_accepts_any_valid_name_and_ignores_the_password() -> None:
    open_auth = Authenticator("open")
    assert open_auth.check_basic(basic(b"load-user-0042:")) == "load-user-0042"
    assert open_auth.check_basic(basic(b"bob:whatever")) == "bob"
    with pytest.raises(AuthError, match="bad user name"):
        open_auth.check_basic(basic(b"bad name:pw"))
    with pytest.raises(AuthError, match="missing credentials"):
        open_auth.check_basic(None)


def test_authenticator_refuses_unknown_modes_and_users_mode_without_a_store() -> None:
    with pytest.raises(ValueError, match="auth mode"):
        Authenticator("ldap")
    with pytest.raises(ValueError, match="UserStore"):
        Authenticator("users", None)


@pytest.mark.parametrize(
    ("header", "query", "expected"),
    [
        ("Bearer abc.def.ghi", None, "abc.def.ghi"),
        ("bearer  abc.def.ghi ", None, "abc.def.ghi"),
        ("Bearer header-wins", "query-token", "header-wins"),
        (None, "query-token", "query-token"),
        ("Basic YWxpY2U6cHc=", "query-token", "query-token"),
        ("Bearer ", None, None),
        ("Basic YWxpY2U6cHc=", None, None),
        (None, "", None),
        (None, None, None),
    ],
)
def test_bearer_token_comes_from_the_header_or_the_query(
    header: str | None, query: str | None, expected: str | None
) -> None:
    assert bearer_token(header, query) == expected
    assert Authenticator.bearer_token(header, query) == expected


# ----------------------------------------------------------------------------- adduser


def test_adduser_reads_the_password_from_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.json"
    status = adduser_main(["--users", str(path), "alice"], stdin=io.StringIO("s3cret pw\n"))
    assert status == 0
    assert capsys.readouterr().out == f"added user alice to {path}\n"
    assert UserStore(path).check("alice", "s3cret pw")


def test_adduser_uses_sys_stdin_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.json"
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\r\n"))
    assert adduser_main(["--password-stdin", "--users", str(path), "bob"]) == 0
    assert "added user bob" in capsys.readouterr().out
    assert UserStore(path).check("bob", "pw")


def test_adduser_again_replaces_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users.json"
    adduser_main(["--users", str(path), "alice"], stdin=io.StringIO("one\n"))
    assert adduser_main(["--users", str(path), "alice"], stdin=io.StringIO("two\n")) == 0
    assert "replaced the password of user alice" in capsys.readouterr().out
    assert UserStore(path).check("alice", "two")


@pytest.mark.parametrize(
    ("argv", "stdin", "error"),
    [
        (["--users", "{path}", "alice"], "\n", "error: empty password\n"),
        (["--users", "{path}", "alice"], "", "error: empty password\n"),
        (["--users", "{path}", "no good"], "pw\n", "error: bad user name 'no good'"),
        (["alice"], "pw\n", "error: the following arguments are required: --users\n"),
        (["--users", "{path}"], "pw\n", "error: the following arguments are required: NAME\n"),
    ],
)
def test_adduser_errors_are_one_line_and_status_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    stdin: str,
    error: str,
) -> None:
    path = tmp_path / "users.json"
    argv = [arg.format(path=path) for arg in argv]
    assert adduser_main(argv, stdin=io.StringIO(stdin)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(error) and captured.err.count("\n") == 1
    assert not path.exists()
