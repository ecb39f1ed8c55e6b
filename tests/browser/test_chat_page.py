"""The chat page (server/web/) in headless Chromium against the real server.

Two windows (alice, bob) chat: served by the server itself, from a second origin that
``server.origins`` allows, refused from one it does not, over TLS, and across a dropped
socket. Each own line comes from the Ack (the sending connection never gets a Deliver of
its own message) and carries its ack latency; each other line comes from a Deliver.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import ssl
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from bench._support.servers import ServerProc
from bench._support.tls import throwaway_tls, trust_context
from tests.browser.support_browser import (
    ROOT,
    WAIT_S,
    ChatPage,
    Line,
    StaticSite,
    add_user,
    browser_missing,
    chromium,
)

pytestmark = pytest.mark.skipif(bool(browser_missing()), reason=browser_missing())

StartServer = Callable[..., ServerProc]


def chat_lines(page: ChatPage) -> list[tuple[int | None, str, str]]:
    return [(line.seq, line.sender, line.body) for line in page.lines()]


def both_joined(alice: ChatPage, bob: ChatPage, url_a: str, url_b: str, room: str) -> None:
    alice.open(url_a)
    bob.open(url_b)
    alice.login("alice")
    bob.login("bob")
    alice.join(room)
    bob.join(room)


def exchange(alice: ChatPage, bob: ChatPage) -> None:
    """Each sends one line; each page shows its own (Ack) and the other's (Deliver)."""
    alice.send("hello bob")
    own = alice.wait_line("alice", "hello bob", acked=True)
    bob.wait_line("alice", "hello bob")
    bob.send("hi alice, ça va ?")
    alice.wait_line("bob", "hi alice, ça va ?")
    bob.wait_line("bob", "hi alice, ça va ?", acked=True)
    assert own.own and own.latency_ms is not None and 0 < own.latency_ms < WAIT_S * 1000
    assert re.fullmatch(r"ack \d+(\.\d)? ms", own.note), own.note
    both = [(1, "alice", "hello bob"), (2, "bob", "hi alice, ça va ?")]
    assert chat_lines(alice) == both and chat_lines(bob) == both
    # on the receiving side a line from someone else carries no latency of ours
    assert [(line.own, line.latency_ms is None) for line in bob.lines()] == [
        (False, True),
        (True, False),
    ]


def screenshot_path(tmp_path: Path) -> Path:
    """docs/chat-page.png with CHATCAP_SCREENSHOT=1 (the README's picture), else tmp."""
    if os.environ.get("CHATCAP_SCREENSHOT") == "1":
        return ROOT / "docs" / "chat-page.png"
    return tmp_path / "chat-page.png"


def test_two_pages_served_by_the_server_show_each_others_lines_and_their_own_acks(
    start_server: StartServer, alice: ChatPage, bob: ChatPage, tmp_path: Path
) -> None:
    server = start_server()
    url = server.base_url + "/"
    both_joined(alice, bob, url, url, "lobby")
    assert alice.state()["base"] == server.base_url  # no ?server=: the page's own origin
    exchange(alice, bob)
    alice.send("lunch at noon?")
    bob.wait_line("alice", "lunch at noon?")
    bob.send("yes — the usual place")
    alice.wait_line("bob", "yes — the usual place")
    alice.wait_line("alice", "lunch at noon?", acked=True)
    assert [line.seq for line in alice.lines()] == [1, 2, 3, 4]
    alice.js("window.scrollTo(0, 0)")
    path = screenshot_path(tmp_path)
    assert alice.driver.save_screenshot(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # no script error, no resource refused by the page's Content-Security-Policy, no 404
    assert [line for line in alice.console() if not line.startswith("INFO")] == []


def test_a_page_on_an_allowed_second_origin_logs_in_and_chats_with_a_same_origin_page(
    start_server: StartServer, alice: ChatPage, bob: ChatPage
) -> None:
    with StaticSite() as site:
        server = start_server({"server.origins": [site.origin]})
        both_joined(alice, bob, f"{site.origin}/?server={server.base_url}", server.base_url, "x")
        origin = alice.js("return location.origin")
        assert origin == site.origin != server.base_url
        assert alice.state()["base"] == server.base_url
        exchange(alice, bob)
    log = server.log_tail(100_000)
    assert "route=token status=204" in log  # Chromium's preflight of the Basic-auth fetch
    assert "origin_refused" not in log


def test_a_page_on_a_refused_origin_cannot_log_in_and_says_why(
    start_server: StartServer, alice: ChatPage, bob: ChatPage
) -> None:
    with StaticSite() as site:
        server = start_server({"server.origins": ["http://example.invalid"]})
        alice.open(f"{site.origin}/?server={server.base_url}")
        alice.login("alice")
        errors = alice.wait(alice.errors, "an error on the page")
        assert errors[0][0] == "fetch_failed"
        assert "refused this page's origin" in errors[0][1]
        assert site.origin in errors[0][1] and "server.origins" in errors[0][1]
        assert alice.state()["lastError"]["name"] == "TypeError"  # what fetch() threw
        assert alice.js("return document.getElementById('join').disabled") is True
        console = "\n".join(alice.console())
        assert "blocked by CORS policy" in console, console
        # the same server lets its own page in: it refused the origin, it is not down
        bob.open(server.base_url + "/")
        bob.login("bob")
        bob.join("lobby")
    log = server.log_tail(100_000)
    assert "http.origin_refused" in log and site.origin in log


def test_the_page_chats_over_wss_on_a_tls_server(start_server: StartServer, tmp_path: Path) -> None:
    """The throwaway CA (trustme) is not in Chromium's trust store, so this one Chromium
    runs with ``--ignore-certificate-errors``; the other party, a Python client, verifies
    the server's certificate against that CA."""
    tls = throwaway_tls(tmp_path / "tls")
    server = start_server(tls.overrides())
    assert server.url.startswith("wss://") and server.base_url.startswith("https://")
    driver = chromium("--ignore-certificate-errors")
    try:
        page = ChatPage(driver)
        page.open(server.base_url + "/")
        assert page.js("return location.protocol") == "https:"
        page.login("alice")
        page.join("secure")
        with python_client(server, trust_context(tls.ca_file), "carol", "secure") as carol:
            page.send("over wss")
            page.wait_line("alice", "over wss", acked=True)
            deliver = json.loads(carol.recv(timeout=WAIT_S))
            assert (deliver["type"], deliver["sender"], deliver["body"]) == (
                "deliver",
                "alice",
                "over wss",
            )
            carol.send(json.dumps({"type": "send", "client_msg_id": "c1", "room": "secure",
                                   "body": "verified TLS here"}))  # fmt: skip
            page.wait_line("carol", "verified TLS here")
        assert chat_lines(page) == [(1, "alice", "over wss"), (2, "carol", "verified TLS here")]
    finally:
        driver.quit()


@contextlib.contextmanager
def python_client(
    server: ServerProc, context: ssl.SSLContext, user: str, room: str
) -> Iterator[ClientConnection]:
    """A verifying wss client, joined to ``room``."""
    basic = base64.b64encode(f"{user}:pw".encode()).decode()
    request = urllib.request.Request(
        server.base_url + "/api/v1/token", headers={"Authorization": f"Basic {basic}"}
    )
    with urllib.request.urlopen(request, timeout=WAIT_S, context=context) as resp:
        token = json.loads(resp.read())["token"]
    with connect(
        f"{server.url}?token={token}",
        ssl=context,
        subprotocols=[Subprotocol("chat.v1.json")],
        open_timeout=WAIT_S,
    ) as conn:
        conn.send(json.dumps({"type": "join", "room": room}))
        assert json.loads(conn.recv(timeout=WAIT_S))["type"] == "joined"
        yield conn


def test_a_dropped_socket_reconnects_and_shows_what_it_missed_exactly_once(
    start_server: StartServer, alice: ChatPage, bob: ChatPage
) -> None:
    server = start_server()
    url = server.base_url + "/"
    both_joined(alice, bob, url, url, "lobby")
    alice.send("before the drop")
    bob.wait_line("alice", "before the drop")
    # her own Ack moves her since_seq: the other page can show the line before it lands
    alice.wait_line("alice", "before the drop", acked=True)

    alice.js("window.chatcap.dropSocket({hold: true})")
    alice.wait(lambda: alice.state()["conn"] == "closed", "the socket to close")
    assert alice.state()["sinceSeq"] == 1
    missed = [f"while you were away {i}" for i in (1, 2, 3)]
    for body in missed:
        bob.send(body)
        bob.wait_line("bob", body, acked=True)
    alice.send("typed while offline")  # waits for the socket, sent after the re-Join
    assert alice.lines()[-1] == Line(
        None, "alice", "typed while offline", True, "sending", None, "waiting for the connection"
    )

    alice.js("window.chatcap.resume()")
    alice.wait_line("alice", "typed while offline", acked=True)
    bob.wait_line("alice", "typed while offline")
    for body in missed:
        alice.wait_line("bob", body)
    expected = [
        (1, "alice", "before the drop"),
        *[(seq, "bob", body) for seq, body in zip((2, 3, 4), missed, strict=True)],
        (5, "alice", "typed while offline"),
    ]
    assert chat_lines(alice) == chat_lines(bob) == expected
    assert alice.state()["reconnects"] == 1 and alice.state()["sinceSeq"] == 5

    # without the hold the page reconnects by itself (backoff) and goes on live
    alice.js("window.chatcap.dropSocket()")
    alice.wait(lambda: alice.state()["reconnects"] == 2 and alice.state()["joined"], "rejoin")
    bob.send("after the second drop")
    alice.wait_line("bob", "after the second drop")
    assert chat_lines(alice) == [*expected, (6, "bob", "after the second drop")]


SEND_TWICE_JS = """
for (const body of arguments) {
  document.getElementById('body').value = body;
  document.getElementById('send-form').requestSubmit();
}
"""


def test_error_frames_are_shown_and_a_rate_limited_send_is_sent_again_with_its_id(
    start_server: StartServer, alice: ChatPage, bob: ChatPage
) -> None:
    server = start_server(
        {"server.rate_limit.rate_per_s": 0.5, "server.rate_limit.burst": 1}  # 1 send / 2 s
    )
    url = server.base_url + "/"
    both_joined(alice, bob, url, url, "lobby")
    alice.js(SEND_TWICE_JS, "first", "second")  # one script: the second meets an empty bucket
    alice.wait(lambda: any(code == "rate_limited" for code, _ in alice.errors()), "the error")
    assert "retry after" in dict(alice.errors())["rate_limited"]
    second = alice.wait_line("alice", "second", acked=True)  # sent again after retry_after_ms
    assert second.latency_ms is not None and second.latency_ms > 1000
    bob.wait_line("alice", "second")
    assert chat_lines(bob) == [(1, "alice", "first"), (2, "alice", "second")]

    alice.js(SEND_TWICE_JS, "x" * 16_000)  # under the frame limit, over the body limit
    failed = alice.wait(
        lambda: next((line for line in alice.lines() if line.state == "failed"), None),
        "the failed line",
    )
    assert (failed.seq, failed.note) == (None, "not sent: too_large")
    assert "body over" in dict(alice.errors())["too_large"]


def test_with_a_password_file_a_wrong_password_is_refused_with_the_servers_reason(
    start_server: StartServer, alice: ChatPage, tmp_path: Path
) -> None:
    users = tmp_path / "users.json"
    add_user(users, "alice", "pässwörd")  # not Latin-1 only: Basic credentials are UTF-8
    server = start_server({"server.auth": "users"}, users=users)
    alice.open(server.base_url + "/")
    alice.login("alice", "wrong")
    errors = alice.wait(alice.errors, "an error on the page")
    assert errors[0][0] == "unauthorized" and "401" in errors[0][1], errors
    assert alice.js("return document.getElementById('login').disabled") is False
    alice.login("alice", "pässwörd")
    alice.join("lobby")
    assert alice.state()["user"] == "alice"
