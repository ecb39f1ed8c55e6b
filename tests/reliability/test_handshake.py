"""Handshake and HTTP abuse: each gets its documented answer while a normal client chats.

The attackers speak raw bytes over sockets bound to other loopback addresses (127.0.0.2
and up — still loopback, to the server's 127.0.0.1), so per-IP limits see them as other
clients; the normal client comes from 127.0.0.1 and sends a message and waits for its Ack
between attacks. At the end every acked message must be in the history (``lost`` = 0) and
the server log must hold no traceback and no ERROR line.

- malformed and hostile requests: over-long request line (414) or header line (431), too
  many headers (431), a method other than GET (405 — on every route, the upgrade
  included), no ``Upgrade`` (426), HTTP/1.0 upgrade (505), bad ``Sec-WebSocket-Key`` or
  version (400), no or unknown subprotocol (400, JSON with the reason), a foreign
  ``Origin`` when ``server.origins`` is set (403; no ``Origin`` is not a browser's
  request and is no origin question), a request body or non-HTTP bytes (no
  answer: the connection is closed). The order and the sizes are drawn from the seed.
- slowloris: ``scale.slowloris`` connections that never finish their handshake (silent,
  half a request line, headers without the blank line, or headers trickled one line at a
  time) are all dropped by the server at ``server.open_timeout_s`` — not before — while a
  normal client connects, logs in, joins and gets its Acks; the server's sockets go back
  to where they were.
- per-IP connection cap and handshake rate: one address at its cap gets 429
  ``too_many_connections`` and another 429 ``handshake_rate`` past its burst, both with
  ``Retry-After``, while other addresses connect and chat; the cap frees when a
  connection closes.
"""

from __future__ import annotations

import contextlib
import json
import random
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin, Subprotocol

from chatcap.protocol import CODECS, Ack
from tests.reliability.conftest import Record, Scale
from tests.reliability.support_senders import read_history
from tests.server.conftest import scaled
from tests.server.support_chat import ChatClient, ServerProcess

Start = Callable[..., ServerProcess]

ORIGIN = "https://chat.example"
ROOM = "lobby"
NO_LIMITER = {"server.rate_limit.algorithm": "none"}  # the chatting client is not the subject
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample Sec-WebSocket-Key
# websockets' parser limits (websockets.http11: MAX_LINE_LENGTH, MAX_NUM_HEADERS)
MAX_LINE, MAX_HEADERS = 8192, 128


def attacker_ip(n: int) -> str:
    return f"127.0.0.{2 + n % 250}"


def open_from(server: ServerProcess, ip: str) -> socket.socket:
    """A TCP connection to the server from the loopback address ``ip``."""
    return socket.create_connection(
        ("127.0.0.1", server.port), timeout=scaled(10), source_address=(ip, 0)
    )


@dataclass
class Answer:
    status: int | None  # None: the server closed the connection without an answer
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def error(self) -> dict[str, str]:
        assert self.headers.get("content-type") == "application/json", (self.status, self.body)
        return dict(json.loads(self.body))


def raw_request(server: ServerProcess, ip: str, data: bytes) -> Answer:
    """Send ``data`` as is, read until the server closes, parse what came back."""
    with open_from(server, ip) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):  # each recv waits at most the socket's timeout
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(f"the server neither answered nor closed: {data[:80]!r}") from None
    raw = b"".join(chunks)
    if not raw:
        return Answer(None)
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return Answer(int(status_line.split(" ")[1]), headers, body)


def request(method: str, path: str, headers: dict[str, str], version: str = "HTTP/1.1") -> bytes:
    lines = [
        f"{method} {path} {version}",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def upgrade_headers(token: str, **changes: str | None) -> dict[str, str]:
    """A valid handshake's headers for ``token``; ``changes`` replace (None: drop) some."""
    headers: dict[str, str | None] = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": "chat.v1.json",
        "Origin": ORIGIN,
        "Authorization": f"Bearer {token}",
    }
    headers.update({k.replace("_", "-"): v for k, v in changes.items()})
    return {k: v for k, v in headers.items() if v is not None}


class BrowserClient(ChatClient):
    """A :class:`ChatClient` that sends an ``Origin``, as a browser does."""

    def __init__(self, server: ServerProcess, user: str, origin: str = ORIGIN) -> None:
        self.server, self.user, self.codec = server, user, CODECS["json"]
        self.token = server.token(user)
        self.ws: ClientConnection = connect(
            server.ws_url,
            subprotocols=[Subprotocol(self.codec.subprotocol)],
            additional_headers={"Authorization": f"Bearer {self.token}"},
            origin=Origin(origin),
            open_timeout=scaled(10),
        ).__enter__()


@dataclass
class Chatter:
    """The normal client: one message, one Ack, whenever asked; what was acked is kept."""

    client: ChatClient
    acked: dict[str, int] = field(default_factory=dict)  # client_msg_id -> seq

    def __post_init__(self) -> None:
        self.client.join(ROOM)

    def round_trip(self, note: str) -> None:
        cid = self.client.send_text(ROOM, f"still here after {note}")
        answer = self.client.reply()
        assert isinstance(answer, Ack) and answer.client_msg_id == cid, (note, answer)
        self.acked[cid] = answer.seq

    def lost(self, server: ServerProcess) -> int:
        stored = {m.client_msg_id: m.seq for m in read_history(server, ROOM)}
        return sum(stored.get(cid) != seq for cid, seq in self.acked.items())


def assert_clean_log(server: ServerProcess) -> None:
    log = server.log()
    assert "event=server.started" in log
    bad = [ln for ln in log.splitlines() if "Traceback" in ln or "level=ERROR" in ln]
    assert not bad, "\n".join(bad[:20])


# ---------------------------------------------------------------------------- abuse


@dataclass(frozen=True)
class Abuse:
    name: str
    data: bytes
    status: int | None  # None: closed without an answer
    error: str = ""  # our JSON error code, when the answer is ours
    says: str = ""  # text the answer's body must contain


def abuses(rng: random.Random, token: str) -> list[Abuse]:
    """One of each hostile request; sizes drawn from ``rng``."""
    ws = "/api/v1/ws"
    basic = {"Authorization": "Basic bWFsbG9yeTpwdw=="}  # mallory:pw
    pad = "a" * rng.randint(MAX_LINE + 1, 8 * MAX_LINE)
    many = {f"X-Pad-{i}": "v" for i in range(rng.randint(MAX_HEADERS + 1, 4 * MAX_HEADERS))}
    other = rng.choice(["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
    return [
        Abuse("long request line", request("GET", f"{ws}?pad={pad}", upgrade_headers(token)), 414),
        Abuse(
            "long header line",
            request("GET", ws, upgrade_headers(token, X_Pad="b" * len(pad))),
            431,
        ),
        Abuse("too many headers", request("GET", ws, {**upgrade_headers(token), **many}), 431),
        Abuse(
            "POST upgrade",
            request("POST", ws, upgrade_headers(token, Content_Length="0")),
            405,
            "method_not_allowed",
        ),
        Abuse(
            f"{other} token",
            request(other, "/api/v1/token", {**basic, "Content-Length": "0"}),
            405,
            "method_not_allowed",
        ),
        Abuse(
            "no Upgrade",
            request("GET", ws, upgrade_headers(token, Upgrade=None, Connection=None)),
            426,
        ),
        Abuse("HTTP/1.0 upgrade", request("GET", ws, upgrade_headers(token), "HTTP/1.0"), 505),
        Abuse("bad key", request("GET", ws, upgrade_headers(token, Sec_WebSocket_Key="abc")), 400),
        Abuse(
            "version 8", request("GET", ws, upgrade_headers(token, Sec_WebSocket_Version="8")), 400
        ),
        Abuse(
            "no subprotocol",
            request("GET", ws, upgrade_headers(token, Sec_WebSocket_Protocol=None)),
            400,
            "bad_subprotocol",
            "got none",
        ),
        Abuse(
            "unknown subprotocol",
            request("GET", ws, upgrade_headers(token, Sec_WebSocket_Protocol="chat.v2")),
            400,
            "bad_subprotocol",
            "chat.v2",
        ),
        Abuse(
            "foreign Origin",
            request("GET", ws, upgrade_headers(token, Origin="https://evil.example")),
            403,
            says="Origin",
        ),
        # no Origin: not a browser, not an origin question — it opens (tests/server/test_web.py)
        Abuse(
            "request body",
            request("POST", "/healthz", {"Content-Length": "5"}) + b"hello",
            None,
        ),
        Abuse("not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", None),
    ]


ABUSE_ROUNDS = {"ci": 2, "full": 10}  # each round: every abuse once, in a seeded order


def test_hostile_requests_get_the_documented_answer_while_a_client_chats(
    start_server: Start, scale: Scale, rng: random.Random, record: Record
) -> None:
    server = start_server({"server.origins": [ORIGIN], **NO_LIMITER})
    token = server.token("mallory")
    rounds = ABUSE_ROUNDS[scale.name]
    tried = 0
    with BrowserClient(server, "alice") as alice:
        chatter = Chatter(alice)
        for r in range(rounds):
            batch = abuses(rng, token)
            rng.shuffle(batch)
            for abuse in batch:
                answer = raw_request(server, attacker_ip(r), abuse.data)
                where = f"{abuse.name}: {answer.status} {answer.body[:200]!r}"
                assert answer.status == abuse.status, where
                if abuse.error:
                    assert answer.error()["error"] == abuse.error, where
                    assert answer.error()["message"], where
                if abuse.says:
                    assert abuse.says.encode() in answer.body, where
                if abuse.status == 405:
                    assert answer.headers.get("allow") == "GET", where
                    assert b'"token"' not in answer.body, where
                if abuse.status == 426:
                    assert answer.headers.get("upgrade") == "websocket", where
                tried += 1
                chatter.round_trip(abuse.name)
        # and the same handshake, done right, still opens
        assert raw_request(server, attacker_ip(0), request("GET", "/healthz", {})).status == 200
        with BrowserClient(server, "mallory") as mallory:
            mallory.join(ROOM)
        chatter.round_trip("all of it")
    lost = chatter.lost(server)
    record("bad_inputs", tried)
    record("acked", len(chatter.acked))
    record("lost", lost)
    assert lost == 0
    assert_clean_log(server)


# ---------------------------------------------------------------------------- slowloris

# short, so the case is quick; long beside what one chat round trip takes, so the whole
# attack is still held while the client logs in, connects, joins and gets its first Ack
OPEN_TIMEOUT_S = 3.0
STAGES = ("silent", "half a request line", "headers, no blank line", "trickle")


@dataclass
class HalfOpen:
    sock: socket.socket
    stage: str
    opened: float
    closed: float | None = None
    answered: bytes = b""


def half_open(server: ServerProcess, ip: str, stage: str, token: str) -> HalfOpen:
    opened = time.monotonic()  # before connect: the server's clock starts at its accept
    sock = open_from(server, ip)
    head = request("GET", "/api/v1/ws", upgrade_headers(token))[:-2]  # no blank line
    if stage == "half a request line":
        sock.sendall(head[: head.index(b" HTTP/")])
    elif stage != "silent":
        sock.sendall(head)
    sock.setblocking(False)
    return HalfOpen(sock, stage, opened)


def server_fds(server: ServerProcess) -> int:
    return len(list(Path(f"/proc/{server.proc.pid}/fd").iterdir()))


def server_rss_mib(server: ServerProcess) -> float:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def watch_closes(
    attack: list[HalfOpen], deadline: float, tick_s: float, on_tick: Callable[[], None]
) -> None:
    """Wait until the server has closed every half-open socket (or the deadline): note
    when each closes; on every ``tick_s`` without news, trickle one header line into the
    trickling ones and call ``on_tick``."""
    trickled = 0
    while time.monotonic() < deadline:
        waiting = {h.sock: h for h in attack if h.closed is None}
        if not waiting:
            return
        readable, _, _ = select.select(list(waiting), [], [], tick_s)
        now = time.monotonic()
        for sock in readable:
            h = waiting[sock]
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            if data:
                h.answered += data
            else:
                h.closed = now
        if not readable:
            trickled += 1
            for h in waiting.values():
                if h.stage == "trickle" and h.closed is None:
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        h.sock.send(f"X-Trickle-{trickled}: 1\r\n".encode())  # closed: seen next
            on_tick()


def closed_yet(h: HalfOpen) -> bool:
    """Has the server closed it (without reading it)?"""
    try:
        return h.sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_slowloris_handshakes_are_dropped_at_the_open_timeout_while_a_client_chats(
    start_server: Start, scale: Scale, rng: random.Random, record: Record
) -> None:
    open_timeout_s = scaled(OPEN_TIMEOUT_S)
    server = start_server({"server.open_timeout_s": open_timeout_s, **NO_LIMITER})
    token = server.token("mallory")
    fds_before = server_fds(server)
    started = time.monotonic()
    attack = [
        half_open(server, attacker_ip(rng.randrange(8)), rng.choice(STAGES), token)
        for _ in range(scale.slowloris)
    ]
    open_s = time.monotonic() - started
    try:
        # during the attack: a fresh client logs in, connects, joins and chats
        with ChatClient(server, "alice") as alice:
            chatter = Chatter(alice)
            chatter.round_trip("connecting during the attack")
            still_open = [h for h in attack if not closed_yet(h)]
            fds_during = server_fds(server)
            rss_mib = server_rss_mib(server)
            watch_closes(
                attack,
                deadline=time.monotonic() + open_timeout_s + scaled(15),
                tick_s=open_timeout_s / 4,
                on_tick=lambda: chatter.round_trip("a tick of the attack"),
            )
            chatter.round_trip("the attack")
            fds_after = server_fds(server)
    finally:
        for h in attack:
            h.sock.close()
    lingering = [h.stage for h in attack if h.closed is None]
    assert not lingering, f"{len(lingering)} half-open handshakes outlived the open timeout"
    early = [
        (h.stage, round(h.closed - h.opened, 3))
        for h in attack
        if h.closed and h.closed - h.opened < open_timeout_s - 0.05
    ]
    assert not early, f"dropped before server.open_timeout_s = {open_timeout_s}: {early[:10]}"
    assert not [h.answered for h in attack if h.answered], "a half-sent handshake got an answer"
    # the chat happened while every half-open connection was held by the server
    assert len(still_open) == len(attack)
    assert fds_during >= fds_before + len(attack)
    assert fds_after <= fds_before + 3  # alice's socket, and slack for the store
    lost = chatter.lost(server)
    record("slowloris", len(attack))
    record("slowloris_open_s", round(open_s, 3))
    record("slowloris_close_s_max", round(max(h.closed - h.opened for h in attack if h.closed), 3))
    record("acked", len(chatter.acked))
    record("lost", lost)
    record("slowloris_server_rss_mib", round(rss_mib, 1))
    assert lost == 0
    assert_clean_log(server)


# ---------------------------------------------------------------------------- per-IP limits

CAP, BURST, RATE_PER_S = 6, 12, 1.0


def ws_from(server: ServerProcess, ip: str, token: str) -> ClientConnection:
    return connect(
        server.ws_url,
        sock=open_from(server, ip),
        subprotocols=[Subprotocol("chat.v1.json")],
        additional_headers={"Authorization": f"Bearer {token}"},
        open_timeout=scaled(10),
    ).__enter__()


def refused(server: ServerProcess, ip: str, token: str) -> tuple[int, str, int]:
    """(status, error code, Retry-After) of a handshake that must be refused."""
    with pytest.raises(InvalidStatus) as info:
        ws_from(server, ip, token).close()
    resp = info.value.response
    return resp.status_code, json.loads(resp.body)["error"], int(resp.headers["Retry-After"])


def test_per_ip_cap_and_handshake_rate_refuse_one_address_while_others_chat(
    start_server: Start, rng: random.Random, record: Record
) -> None:
    server = start_server(
        {
            "server.max_connections_per_ip": CAP,
            "server.handshake_burst": BURST,
            "server.handshake_rate_per_s": RATE_PER_S,
            **NO_LIMITER,
        }
    )
    token = server.token("mallory")
    capped, hasty = attacker_ip(0), attacker_ip(1)
    refusals = 0
    with ChatClient(server, "alice") as alice:
        chatter = Chatter(alice)
        # the cap: CAP connections from one address, then 429 however often it asks
        held = [ws_from(server, capped, token) for _ in range(CAP)]
        try:
            for _ in range(rng.randint(3, 10)):
                status, code, retry = refused(server, capped, token)
                assert (status, code) == (429, "too_many_connections") and retry >= 1
                refusals += 1
                chatter.round_trip("a refused connection")
            with ChatClient(server, "bob") as bob:  # another address is not capped
                bob.join(ROOM)
            held.pop(rng.randrange(CAP)).close()
            # the freed slot opens once the server has seen the close
            deadline = time.monotonic() + scaled(10)
            while True:
                try:
                    held.append(ws_from(server, capped, token))
                    break
                except InvalidStatus as exc:
                    assert exc.response.status_code == 429 and time.monotonic() < deadline
        finally:
            for ws in held:
                ws.close()
        chatter.round_trip("the cap")

        # the rate: one address opens and closes as fast as it can
        attempts = BURST + rng.randint(5, 15)
        opened, first_refusal = 0, None
        started = time.monotonic()
        for i in range(attempts):
            try:
                ws_from(server, hasty, token).close()
                opened += 1
            except InvalidStatus as exc:
                resp = exc.response
                assert resp.status_code == 429, resp.body
                assert json.loads(resp.body)["error"] == "handshake_rate"
                assert int(resp.headers["Retry-After"]) >= 1
                refusals += 1
                first_refusal = i if first_refusal is None else first_refusal
        elapsed = time.monotonic() - started
        assert first_refusal is not None and first_refusal >= BURST
        assert BURST <= opened <= BURST + int(RATE_PER_S * elapsed) + 1
        chatter.round_trip("the hasty address")
        with ChatClient(server, "carol") as carol:  # 127.0.0.1 has its own bucket
            carol.join(ROOM)
        chatter.round_trip("all of it")
    lost = chatter.lost(server)
    record("handshakes_refused", refusals)
    record("acked", len(chatter.acked))
    record("lost", lost)
    assert lost == 0
    assert_clean_log(server)
