"""The chat users' WebSocket client (bench.load.wsclient): frames, handshake, real peers.

Three layers: the pure parser and frame builder on bytes; the handshake answer check; and
the client against real servers — websockets' own sync server in a thread (it checks our
masking and framing as RFC 6455 asks, sends fragmented messages, pings, closes) and our
chat server in a subprocess (handshake with the codec's subprotocol, Join, Send → Ack).
The client is plain blocking sockets here: no gevent in the test process.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import struct
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.server import ServerConnection, serve
from websockets.utils import apply_mask

from bench.load import wsclient
from bench.load.wsclient import (
    OP_BINARY,
    OP_PING,
    OP_TEXT,
    ConnectionClosed,
    FrameParser,
    HandshakeError,
    ProtocolError,
    accept_key,
    client_frame,
    parse_handshake_response,
)
from chatcap.protocol import Ack, Join, Joined, Send, get_codec
from tests.bench.load.support_locust import Server, scaled


def server_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    """An unmasked frame as a server sends it."""
    b0 = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", b0, n) + payload
    if n < 65536:
        return struct.pack("!BBH", b0, 126, n) + payload
    return struct.pack("!BBQ", b0, 127, n) + payload


# ----------------------------------------------------------------------------- frames


def test_the_parser_returns_messages_and_control_frames_in_arrival_order() -> None:
    data = (
        server_frame(OP_TEXT, b'{"a":1}')
        + server_frame(OP_PING, b"hi")
        + server_frame(OP_BINARY, b"\x00\x01")
    )
    assert FrameParser().feed(data) == [
        (OP_TEXT, b'{"a":1}'),
        (OP_PING, b"hi"),
        (OP_BINARY, b"\x00\x01"),
    ]


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70_000])
def test_a_frame_split_anywhere_across_reads_comes_out_whole_once(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    data = server_frame(OP_BINARY, payload) + server_frame(OP_TEXT, b"next")
    for cut in sorted({1, 2, 3, 9, len(data) // 2, len(data) - 5, len(data) - 1}):
        parser = FrameParser()
        out = parser.feed(data[:cut]) + parser.feed(data[cut:])
        assert out == [(OP_BINARY, payload), (OP_TEXT, b"next")], cut


def test_fragments_are_joined_with_control_frames_between_them_delivered_first() -> None:
    data = (
        server_frame(OP_TEXT, b"hel", fin=False)
        + server_frame(OP_PING, b"p")
        + server_frame(0x0, b"lo", fin=False)
        + server_frame(0x0, b"!", fin=True)
    )
    assert FrameParser().feed(data) == [(OP_PING, b"p"), (OP_TEXT, b"hello!")]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (struct.pack("!BB", 0x81, 0x80 | 2) + b"\x00\x00\x00\x00ab", 1002),  # masked
        (server_frame(OP_TEXT, b"x", rsv=0x40), 1002),  # RSV1 without an extension
        (server_frame(0x0, b"x"), 1002),  # a continuation outside a message
        (server_frame(OP_PING, b"x", fin=False), 1002),  # a fragmented control frame
        (server_frame(OP_PING, b"x" * 126), 1002),  # an oversized control frame
        (server_frame(0x3, b""), 1002),  # a reserved opcode
        (server_frame(OP_BINARY, b"x" * 2000), 1009),  # over max_size
    ],
)
def test_a_server_frame_that_breaks_rfc_6455_is_a_protocol_error(frame: bytes, code: int) -> None:
    with pytest.raises(ProtocolError) as caught:
        FrameParser(max_size=1000).feed(frame)
    assert caught.value.code == code


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
def test_a_client_frame_is_final_masked_and_unmasks_to_the_payload(size: int) -> None:
    payload, mask = os.urandom(size), b"\x01\x02\x03\x04"
    frame = client_frame(OP_BINARY, payload, mask)
    assert frame[0] == 0x80 | OP_BINARY and frame[1] & 0x80
    length, start = frame[1] & 0x7F, 2
    if length == 126:
        length, start = struct.unpack("!H", frame[2:4])[0], 4
    elif length == 127:
        length, start = struct.unpack("!Q", frame[2:10])[0], 10
    assert length == size and frame[start : start + 4] == mask
    assert apply_mask(frame[start + 4 :], mask) == payload


# ----------------------------------------------------------------------------- handshake


def answer(key: str, *extra: str) -> bytes:
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_key(key)}",
        *extra,
    ]
    return "\r\n".join(lines).encode()


def test_the_accept_key_is_rfc_6455s_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_good_answer_gives_the_chosen_subprotocol() -> None:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    head = answer(key, "Sec-WebSocket-Protocol: chat.v1.json")
    assert parse_handshake_response(head, key, ["chat.v1.json"]) == "chat.v1.json"
    assert parse_handshake_response(answer(key), key) == ""


@pytest.mark.parametrize(
    ("head", "says"),
    [
        (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0", "HTTP 401"),
        (answer("other-key", "Sec-WebSocket-Protocol: chat.v1.json"), "Sec-WebSocket-Accept"),
        (answer("k"), "chose none"),
        (answer("k", "Sec-WebSocket-Protocol: chat.v1.protobuf"), "not offered"),
        (
            answer("k", "Sec-WebSocket-Protocol: chat.v1.json", "Sec-WebSocket-Extensions: x"),
            "extension",
        ),
    ],
)
def test_a_bad_answer_is_a_handshake_error_saying_what_was_wrong(head: bytes, says: str) -> None:
    with pytest.raises(HandshakeError, match=says):
        parse_handshake_response(head, "k", ["chat.v1.json"])


# ----------------------------------------------------------------------------- a real peer


@contextmanager
def websockets_server(handler: Callable[[ServerConnection], None]) -> Iterator[str]:
    """websockets' sync server on a free loopback port, in a thread; yields its URL."""
    with serve(handler, "127.0.0.1", 0, compression=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}/"
        finally:
            server.shutdown()
            thread.join(scaled(5))


def echo(ws: ServerConnection) -> None:
    for message in ws:
        ws.send(message)


def test_messages_of_every_size_echo_back_through_a_strict_peer() -> None:
    with websockets_server(echo) as url:
        ws = wsclient.connect(url, timeout_s=scaled(5))
        for size in (0, 1, 125, 126, 70_000):
            ws.send(b"b" * size, text=False)
            ws.send(("é" * size).encode(), text=True)
            got: list[bytes] = []
            while len(got) < 2:
                got += ws.recv_batch()
            assert got == [b"b" * size, ("é" * size).encode()]
        ws.close()
        assert ws.closed is not None and ws.closed.code == 1000


def test_a_fragmented_message_and_a_ping_from_the_server() -> None:
    pong_seen = threading.Event()

    def handler(ws: ServerConnection) -> None:
        ws.send(["frag", "mented"])  # websockets sends an iterable as fragments
        if ws.ping(b"are you there").wait(scaled(5)):
            pong_seen.set()
        ws.send("after the pong")
        ws.recv()  # until the client closes

    with websockets_server(handler) as url:
        ws = wsclient.connect(url, timeout_s=scaled(5))
        got: list[bytes] = []
        while len(got) < 2:
            got += ws.recv_batch()
        assert got == [b"fragmented", b"after the pong"]
        assert pong_seen.is_set()
        ws.close()


def test_an_event_loop_reader_gets_the_same_messages_and_replies_through_defer() -> None:
    pong_seen = threading.Event()

    def handler(ws: ServerConnection) -> None:
        ws.send(["frag", "mented"])
        if ws.ping(b"ping").wait(scaled(5)):
            pong_seen.set()
        ws.send("after the pong")
        ws.close(1001)

    deferred: list[Callable[[], None]] = []
    shut: list[bool] = []
    with websockets_server(handler) as url:
        ws = wsclient.connect(url, timeout_s=scaled(5))
        ws.read_elsewhere, ws.defer = True, deferred.append
        ws.on_shutdown = lambda: shut.append(True)
        got: list[bytes] = []
        while ws.closed is None:
            ready, _, _ = select.select([ws.sock], [], [], scaled(5))
            assert ready, "the server went quiet"
            # as a hub callback would, when readable; the close frame may come alone, in
            # a read of its own, which then ends in ConnectionClosed
            with contextlib.suppress(ConnectionClosed):
                got += ws.read_ready()
            while deferred:  # the pong (and the close reply) are written later, not here
                deferred.pop(0)()
        assert got == [b"fragmented", b"after the pong"]
        assert pong_seen.is_set() and ws.closed.code == 1001 and shut
        with pytest.raises(ConnectionClosed):
            ws.read_ready()


def test_a_close_from_the_server_is_answered_and_ends_the_connection() -> None:
    codes: list[int | None] = []

    def handler(ws: ServerConnection) -> None:
        ws.send("bye")
        ws.close(4001, "going away")
        codes.append(ws.close_code)

    with websockets_server(handler) as url:
        ws = wsclient.connect(url, timeout_s=scaled(5))
        assert ws.recv_batch() == [b"bye"]
        with pytest.raises(ConnectionClosed) as caught:
            ws.recv_batch()
        assert (caught.value.code, caught.value.reason) == (4001, "going away")
        with pytest.raises(ConnectionClosed):
            ws.send(b"too late", text=False)
    assert codes == [4001]  # the server completed its closing handshake: we answered


def test_wss_verifies_the_server_against_the_ca_it_is_given(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    import ssl

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with serve(echo, "127.0.0.1", 0, ssl=server_ctx, compression=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        url = f"wss://127.0.0.1:{server.socket.getsockname()[1]}/"
        try:
            ws = wsclient.connect(url, timeout_s=scaled(5), ssl_context=client_ctx)
            ws.send(b"over tls", text=False)
            assert ws.recv_batch() == [b"over tls"]
            ws.close()
            with pytest.raises(ssl.SSLCertVerificationError):
                wsclient.connect(url, timeout_s=scaled(5), ssl_context=ssl.create_default_context())
        finally:
            server.shutdown()
            thread.join(scaled(5))


# ----------------------------------------------------------------------------- our server


def token(server: Server, login: str) -> str:
    basic = base64.b64encode(f"{login}:pw".encode()).decode()
    body: Any = json.loads(server.get("/api/v1/token", {"Authorization": f"Basic {basic}"}))
    return str(body["token"])


@pytest.mark.parametrize("codec_name", ["json", "protobuf"])
def test_our_server_speaks_to_it_with_the_codecs_subprotocol(
    server: Server, codec_name: str
) -> None:
    codec = get_codec(codec_name)
    url = f"ws://127.0.0.1:{server.port}/api/v1/ws"
    headers = {"Authorization": f"Bearer {token(server, f'ws-{codec_name}')}"}
    ws = wsclient.connect(
        url, subprotocols=[codec.subprotocol], headers=headers, timeout_s=scaled(5)
    )
    assert ws.subprotocol == codec.subprotocol
    room = f"wsclient-{codec_name}-{os.getpid()}"

    def next_message() -> Any:
        return codec.decode(ws.recv_batch()[0])

    ws.send(codec.encode(Join(room=room)), codec.text)
    assert isinstance(next_message(), Joined)
    cid = f"wsclient.{codec_name}.{os.getpid()}"
    ws.send(codec.encode(Send(client_msg_id=cid, room=room, body="hi", sent_at_us=1)), codec.text)
    ack = next_message()
    assert isinstance(ack, Ack) and ack.client_msg_id == cid and ack.seq >= 1
    ws.close()
    assert ws.closed is not None and ws.closed.code == 1000


def test_our_server_refuses_a_bad_token_in_the_handshake(server: Server) -> None:
    url = f"ws://127.0.0.1:{server.port}/api/v1/ws"
    with pytest.raises(HandshakeError, match="HTTP 4"):
        bad = {"Authorization": "Bearer nonsense"}
        wsclient.connect(url, subprotocols=["chat.v1.json"], headers=bad, timeout_s=scaled(5))
    with urllib.request.urlopen(f"{server.http}/healthz", timeout=scaled(5)) as resp:
        assert resp.status == 200  # and the server is fine
