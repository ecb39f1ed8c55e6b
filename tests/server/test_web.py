"""Browsers as clients, on the real server: one Origin allowlist for CORS and the
WebSocket, the chat page's files, TLS on the chat port, the token's unit-named fields,
and the close code the log names. The page itself runs in Chromium in tests/browser/.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin, Subprotocol

from chatcap.protocol import CODECS, Ack, Deliver, Join, Joined, Send
from server.http import WEB_DIR, OriginPolicy, WebFiles
from tests.server.conftest import ROOT, launch, scaled, write_scenario
from tests.server.support_chat import ServerProcess

Start = Callable[..., ServerProcess]
PAGE_ORIGIN = "http://127.0.0.1:9"  # another port = another origin
BASIC = "Basic " + base64.b64encode(b"ann:pw").decode()


def request(
    url: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=scaled(10), context=context) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        body = err.read()
        err.close()
        return err.code, dict(err.headers), body


def ws(url: str, origin: str | None = None, **kwargs: Any) -> ClientConnection:
    conn: ClientConnection = connect(
        url,
        subprotocols=[Subprotocol("chat.v1.json")],
        origin=Origin(origin) if origin else None,
        **kwargs,
    )
    return conn


def preflight(server: ServerProcess, origin: str, path: str = "/api/v1/token") -> Any:
    return request(
        server.http + path,
        "OPTIONS",
        {
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )


# ---------------------------------------------------------------------------- the rule


def test_origin_policy_allows_listed_own_and_star() -> None:
    listed = OriginPolicy.from_config(["https://Chat.Example"], tls=False)
    assert listed.allows("https://chat.example", "127.0.0.1:8765")
    assert not listed.allows("https://evil.example", "127.0.0.1:8765")
    # the server's own origin, whatever the list says (the page at /)
    assert listed.allows("http://127.0.0.1:8765", "127.0.0.1:8765")
    assert not listed.allows("https://127.0.0.1:8765", "127.0.0.1:8765")  # scheme counts
    assert OriginPolicy.from_config([], tls=True).allows("https://h:1", "h:1")
    assert not OriginPolicy.from_config([], tls=False).allows("http://other:1", "h:1")
    assert OriginPolicy.from_config(["*"], tls=False).allows("http://anything:3", None)


# ---------------------------------------------------------------------------- CORS


def test_an_allowed_origin_gets_its_preflight_and_can_read_the_token(start_server: Start) -> None:
    server = start_server({"server.origins": [PAGE_ORIGIN]})
    status, headers, body = preflight(server, PAGE_ORIGIN)
    assert status == 204 and body == b""
    assert headers["Access-Control-Allow-Origin"] == PAGE_ORIGIN
    assert "GET" in headers["Access-Control-Allow-Methods"]
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert int(headers["Access-Control-Max-Age"]) > 0
    assert headers["Vary"] == "Origin"
    status, headers, body = request(
        server.http + "/api/v1/token", headers={"Origin": PAGE_ORIGIN, "Authorization": BASIC}
    )
    assert status == 200 and headers["Access-Control-Allow-Origin"] == PAGE_ORIGIN
    answer = json.loads(body)
    assert answer["user"] == "ann" and answer["token"]
    assert isinstance(answer["expires_at_s"], int) and "expires_at" not in answer
    assert 3590 <= answer["expires_in_s"] <= 3600  # smoke: token_ttl_s = 3600


def test_a_refused_origin_gets_403_and_a_log_line_on_rest_and_websocket(
    start_server: Start,
) -> None:
    server = start_server({"server.origins": ["https://chat.example"]})
    status, headers, body = preflight(server, "https://evil.example")
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    error = json.loads(body)
    assert error["error"] == "origin_refused" and "server.origins" in error["message"]
    token = server.token("ann")
    with pytest.raises(InvalidStatus) as info:
        ws(f"{server.ws_url}?token={token}", "https://evil.example")
    assert info.value.response.status_code == 403
    refusals = [ln for ln in server.log().splitlines() if "event=http.origin_refused" in ln]
    assert len(refusals) == 2, server.log()[-2000:]
    assert all("evil.example" in ln for ln in refusals)
    assert {"route=token", "route=ws"} <= {w for ln in refusals for w in ln.split()}


def test_no_origin_list_means_same_origin_only_and_no_origin_header_is_no_browser(
    start_server: Start,
) -> None:
    server = start_server()
    assert preflight(server, PAGE_ORIGIN)[0] == 403
    own = server.http
    status, headers, _ = request(
        own + "/api/v1/token", headers={"Origin": own, "Authorization": BASIC}
    )
    assert status == 200 and headers["Access-Control-Allow-Origin"] == own
    token = server.token("ann")  # no Origin header at all: a non-browser client
    url = f"{server.ws_url}?token={token}"
    with ws(url, own) as same_origin:
        assert same_origin.subprotocol == "chat.v1.json"
    with ws(url) as no_browser:
        assert no_browser.subprotocol == "chat.v1.json"


def test_star_lets_any_page_in(start_server: Start) -> None:
    server = start_server({"server.origins": ["*"]})
    status, headers, _ = preflight(server, "https://anywhere.example:8443")
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "https://anywhere.example:8443"


def test_options_without_origin_is_still_not_a_method(start_server: Start) -> None:
    server = start_server({"server.origins": ["*"]})
    status, headers, _ = request(server.http + "/api/v1/token", "OPTIONS")
    assert status == 405 and headers["Allow"] == "GET"


# ---------------------------------------------------------------------------- the page


def test_web_files_serve_known_files_with_their_types(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>x</title>")
    (tmp_path / "chat.js").write_text("'use strict';")
    (tmp_path / "notes.txt").write_text("not served: unknown type")
    (tmp_path / "sub").mkdir()
    files = WebFiles.load(tmp_path)
    assert sorted(files.files) == ["chat.js", "index.html"]
    page = files.answer("index.html")
    assert page.status_code == 200 and page.body.startswith(b"<!doctype html>")
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert files.answer("chat.js").headers["Content-Type"].startswith("text/javascript")
    assert files.answer("notes.txt").status_code == 404
    assert files.answer("..").status_code == 404
    assert WebFiles.load(tmp_path / "absent").files == {}


def test_the_page_is_served_at_root_unless_web_is_off(start_server: Start) -> None:
    server = start_server()
    status, headers, body = request(server.http + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert body == (WEB_DIR / "index.html").read_bytes()
    for name in WebFiles.load().files:
        assert request(f"{server.http}/web/{name}")[0] == 200, name
    assert request(server.http + "/web/../app.py")[0] == 404
    off = start_server({"server.web": False})
    assert request(off.http + "/")[0] == 404
    assert request(off.http + "/web/index.html")[0] == 404


# ---------------------------------------------------------------------------- TLS


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return {k: str(v) for k, v in paths.items()}


def test_tls_serves_https_and_wss_on_the_chat_port(
    tmp_path: Path, tls_files: dict[str, str]
) -> None:
    scenario = write_scenario(
        tmp_path,
        {
            "server.tls.cert_file": tls_files["cert"],
            "server.tls.key_file": tls_files["key"],
        },
    )
    server = launch(tmp_path, scenario, tmp_path / "chat.db")
    try:
        trust = ssl.create_default_context(cafile=tls_files["ca"])
        base = f"https://127.0.0.1:{server.port}"
        with pytest.raises(urllib.error.URLError):  # not trusted without the CA
            request(base + "/healthz")
        status, _, body = request(
            base + "/api/v1/token", headers={"Authorization": BASIC}, context=trust
        )
        assert status == 200
        token = json.loads(body)["token"]
        url = f"wss://127.0.0.1:{server.port}/api/v1/ws?token={token}"
        codec = CODECS["json"]
        with (
            ws(url, ssl=trust) as ann,
            ws(url, ssl=trust) as bob,
        ):
            for member in (ann, bob):
                member.send(codec.encode(Join(room="tls")), text=True)
                assert isinstance(codec.decode(member.recv(timeout=scaled(5))), Joined)
            ann.send(codec.encode(Send(client_msg_id="t1", room="tls", body="secret")), text=True)
            assert isinstance(codec.decode(ann.recv(timeout=scaled(5))), Ack)
            got = codec.decode(bob.recv(timeout=scaled(5)))
            assert isinstance(got, Deliver) and got.body == "secret"
        with pytest.raises((ConnectionClosed, OSError, InvalidHandshake)):
            plain = f"ws://127.0.0.1:{server.port}/api/v1/ws?token={token}"
            with ws(plain, open_timeout=scaled(5)):
                pass
        assert "url=wss://127.0.0.1:" in server.log()
    finally:
        server.proc.terminate()
        server.proc.wait(timeout=scaled(15))
        if server.proc.stdout is not None:
            server.proc.stdout.close()


@pytest.mark.parametrize(
    ("tls", "says"),
    [
        ({"cert_file": "/nonexistent/cert.pem", "key_file": "/nonexistent/key.pem"}, "cert_file"),
        ({"cert_file": "KEY", "key_file": "KEY"}, "server.tls: cannot load cert_file"),
    ],
)
def test_a_bad_tls_file_is_named_without_a_traceback(
    tmp_path: Path, tls_files: dict[str, str], tls: dict[str, str], says: str
) -> None:
    overrides = {f"server.tls.{k}": tls_files["key"] if v == "KEY" else v for k, v in tls.items()}
    scenario = write_scenario(tmp_path, overrides)
    proc = subprocess.run(
        [sys.executable, "-m", "server", "--scenario", str(scenario), "--port", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=scaled(30),
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and says in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------- close codes


def test_an_over_size_frame_is_logged_with_the_code_the_client_saw(start_server: Start) -> None:
    server = start_server({"server.max_message_bytes": 1024})
    token = server.token("ann")
    with ws(f"{server.ws_url}?token={token}") as ann:
        ann.send("x" * 4096, text=True)
        with pytest.raises(ConnectionClosed):
            ann.recv(timeout=scaled(5))
        assert ann.protocol.close_rcvd is not None and ann.protocol.close_rcvd.code == 1009
    server.proc.terminate()
    server.proc.wait(timeout=scaled(15))
    closes = [ln for ln in server.log().splitlines() if "event=ws.close" in ln]
    assert len(closes) == 1 and "code=1009" in closes[0] and "by=server" in closes[0], closes


def test_a_refused_log_in_challenges_basic_only_outside_a_page_script(start_server: Start) -> None:
    server = start_server()
    url = server.http + "/api/v1/token"  # no credentials: refused
    status, headers, _ = request(url)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
    status, headers, _ = request(url, headers={"Sec-Fetch-Mode": "navigate"})
    assert headers["WWW-Authenticate"].startswith("Basic ")
    for script in ({"Sec-Fetch-Mode": "cors"}, {"Origin": server.http}):
        status, headers, body = request(url, headers=script)
        assert status == 401 and json.loads(body)["error"] == "unauthorized"
        assert not headers["WWW-Authenticate"].startswith("Basic"), script
