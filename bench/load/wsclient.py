"""A lean WebSocket client for the Locust chat users: RFC 6455 over one plain socket.

Why not ``websockets.sync``: its client gives every connection a reader thread (a
greenlet under gevent) that parses one frame at a time through a generator-based
parser and hands each message over through locks and a queue; per message that costs
several times what the load generator may spend on it. This client reads whatever the
socket has (``recv`` of up to 64 KiB), parses every complete frame in it with a small
loop, and hands the caller the whole batch of messages at once.

It only uses :mod:`socket`, :mod:`ssl` and :mod:`threading`, looked up when called: in a
Locust process gevent has patched them, so a blocked ``recv`` yields to other greenlets;
in pytest it is an ordinary blocking client.

What it speaks (RFC 6455, client side):

* **handshake** — ``GET`` with ``Upgrade: websocket``, a random ``Sec-WebSocket-Key``,
  ``Sec-WebSocket-Version: 13``, the offered subprotocols and the caller's headers; the
  answer must be ``101`` with ``Upgrade: websocket``, ``Connection: Upgrade`` and the
  ``Sec-WebSocket-Accept`` derived from our key, no extension (none was offered), and a
  subprotocol among those offered — required when any was offered (a chat client must
  speak its codec's). Anything else is a :class:`HandshakeError` naming what was wrong;
* **frames** — every client frame masked with a fresh random key (``os.urandom``, read
  4 KiB at a time);
  server frames must be unmasked, without RSV bits, control frames unfragmented and ≤
  125 bytes, a continuation only inside a fragmented message, a message at most
  ``max_size`` bytes. A violation closes the connection with 1002 (1009 for size) and
  raises :class:`ConnectionClosed`. Text payloads are handed over as bytes, undecoded:
  the caller's codec decodes (and so checks the UTF-8 of) every message;
* **control** — a ping is answered by a pong with its payload; a pong is ignored (this
  client sends no pings); a close frame is answered with a close frame echoing its code,
  and :meth:`WebSocket.recv_batch` then raises :class:`ConnectionClosed`;
* **closing** — :meth:`WebSocket.close` sends a close frame (1000), waits up to
  ``timeout_s`` for the server's close frame (read by the receiving greenlet when one is
  reading, else by ``close`` itself), then closes the socket.

``wss://`` wraps the socket in TLS with the caller's context, or
``ssl.create_default_context()`` (which honours ``SSL_CERT_FILE``, as
:func:`bench._support.tls.client_tls_env` sets for a Locust process).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

try:
    from websockets.speedups import apply_mask  # websockets' C helper: XOR with the key
except ImportError:  # pragma: no cover - a build without the C extension
    from websockets.utils import apply_mask

__all__ = [
    "ConnectionClosed",
    "FrameParser",
    "HandshakeError",
    "ProtocolError",
    "WebSocket",
    "accept_key",
    "client_frame",
    "connect",
    "handshake_request",
    "parse_handshake_response",
]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DATA_OPCODES = frozenset({OP_CONT, OP_TEXT, OP_BINARY})
CONTROL_OPCODES = frozenset({OP_CLOSE, OP_PING, OP_PONG})
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455's fixed string behind ``Sec-WebSocket-Accept``."""
CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_TOO_BIG, CLOSE_ABNORMAL = 1000, 1002, 1009, 1006
RECV_BYTES = 65536
MAX_HEAD_BYTES = 16384
DEFAULT_MAX_SIZE = 4 * 2**20


class HandshakeError(Exception):
    """The opening handshake failed: an HTTP status other than 101, or a bad answer."""


class ProtocolError(Exception):
    """The server broke RFC 6455 (the connection is then closed with ``code``)."""

    def __init__(self, reason: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.code = code


class ConnectionClosed(Exception):
    """The connection is closed: by a close frame (``code``, ``reason``), by us, or lost
    (``code`` 1006: the socket ended or failed without a close frame)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


# ----------------------------------------------------------------------------- handshake


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``Sec-WebSocket-Key: key``."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()  # RFC 6455 asks for SHA-1
    return base64.b64encode(digest).decode("ascii")


def handshake_request(
    host: str,
    resource: str,
    key: str,
    subprotocols: Sequence[str] = (),
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
) -> bytes:
    """The opening request: ``GET resource`` to ``Host: host`` with ``key``."""
    lines = [
        f"GET {resource} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        "User-Agent: chatcap-bench",
    ]
    if subprotocols:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}")
    items = headers.items() if isinstance(headers, Mapping) else headers
    lines += [f"{name}: {value}" for name, value in items]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _tokens(value: str) -> list[str]:
    return [t.strip().lower() for t in value.split(",") if t.strip()]


def parse_handshake_response(head: bytes, key: str, subprotocols: Sequence[str] = ()) -> str:
    """Check the server's answer (status line and headers, without the blank line) to a
    request made with ``key``; returns the chosen subprotocol (``""`` when none offered)."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/1.1"):
        raise HandshakeError(f"not an HTTP/1.1 answer: {lines[0][:80]!r}")
    if status[1] != "101":
        raise HandshakeError(f"HTTP {' '.join(status[1:])}")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise HandshakeError(f"bad header line {line[:80]!r}")
        name = name.strip().lower()
        value = value.strip()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    if "websocket" not in _tokens(fields.get("upgrade", "")):
        raise HandshakeError(f"Upgrade: {fields.get('upgrade', '')!r}, expected websocket")
    if "upgrade" not in _tokens(fields.get("connection", "")):
        raise HandshakeError(f"Connection: {fields.get('connection', '')!r}, expected Upgrade")
    if fields.get("sec-websocket-accept") != accept_key(key):
        raise HandshakeError("Sec-WebSocket-Accept does not match our key")
    if fields.get("sec-websocket-extensions"):
        raise HandshakeError(f"extension {fields['sec-websocket-extensions']!r} not offered")
    chosen = fields.get("sec-websocket-protocol", "")
    if chosen and chosen not in subprotocols:
        raise HandshakeError(f"subprotocol {chosen!r} not offered")
    if subprotocols and not chosen:
        raise HandshakeError(f"the server chose none of the subprotocols {list(subprotocols)}")
    return chosen


# ----------------------------------------------------------------------------- frames


def client_frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """One final (FIN) client frame: the header, the 4-byte ``mask``, the masked payload."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + apply_mask(payload, mask)


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's payload: the status code and a UTF-8 reason."""
    return struct.pack("!H", code) + reason.encode("utf-8")[:123]


def parse_close(payload: bytes) -> tuple[int, str]:
    """``(code, reason)`` of a close frame (1005 = no status given)."""
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise ProtocolError("close frame with a 1-byte payload")
    (code,) = struct.unpack("!H", payload[:2])
    try:
        return code, payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("close reason is not UTF-8") from None


class FrameParser:
    """Server frames in, whole messages and control frames out (``feed``).

    ``feed(data)`` returns ``[(opcode, payload), …]`` in arrival order: data messages
    (``OP_TEXT`` / ``OP_BINARY``, fragments joined) and control frames (``OP_PING``,
    ``OP_PONG``, ``OP_CLOSE``). Bytes of an incomplete frame wait for the next feed.
    """

    __slots__ = ("_buf", "_frag_op", "_frag_size", "_frags", "max_size")

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self._buf = b""
        self._frag_op = -1  # the opcode of a fragmented message in progress; -1 = none
        self._frags: list[bytes] = []
        self._frag_size = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Parse what can be parsed of the bytes so far (see the class docstring)."""
        buf = self._buf + data if self._buf else data
        out: list[tuple[int, bytes]] = []
        end, pos = len(buf), 0
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b1 & 0x80:
                raise ProtocolError("masked frame from the server")
            length, start = b1 & 0x7F, pos + 2
            if length == 126:
                if end - start < 2:
                    break
                length, start = int.from_bytes(buf[start : start + 2], "big"), start + 2
            elif length == 127:
                if end - start < 8:
                    break
                length, start = int.from_bytes(buf[start : start + 8], "big"), start + 8
            if length > self.max_size:
                raise ProtocolError(f"frame of {length} bytes > {self.max_size}", CLOSE_TOO_BIG)
            stop = start + length
            if stop > end:
                break
            pos = stop
            if b0 == 0x81 or b0 == 0x82:  # the common case: a whole text or binary message
                if self._frag_op >= 0:
                    raise ProtocolError("new message inside a fragmented one")
                out.append((b0 & 0x0F, buf[start:stop]))
            else:
                self._frame(b0, buf[start:stop], out)
        self._buf = buf[pos:] if pos < end else b""
        return out

    def _frame(self, b0: int, payload: bytes, out: list[tuple[int, bytes]]) -> None:
        """Any frame but a final, unfragmented text or binary one."""
        fin, opcode = b0 & 0x80, b0 & 0x0F
        if b0 & 0x70:
            raise ProtocolError("reserved bits set (no extension was negotiated)")
        if opcode in CONTROL_OPCODES:
            if not fin or len(payload) > 125:
                raise ProtocolError("fragmented or oversized control frame")
            out.append((opcode, payload))
        elif opcode not in DATA_OPCODES:
            raise ProtocolError(f"reserved opcode {opcode:#x}")
        elif opcode == OP_CONT:
            if self._frag_op < 0:
                raise ProtocolError("continuation frame outside a fragmented message")
            self._fragment(payload, fin, out)
        else:
            if self._frag_op >= 0:
                raise ProtocolError("new message inside a fragmented one")
            self._frag_op = opcode
            self._fragment(payload, fin, out)

    def _fragment(self, payload: bytes, fin: int, out: list[tuple[int, bytes]]) -> None:
        self._frag_size += len(payload)
        if self._frag_size > self.max_size:
            raise ProtocolError(f"message over {self.max_size} bytes", CLOSE_TOO_BIG)
        self._frags.append(payload)
        if fin:
            out.append((self._frag_op, b"".join(self._frags)))
            self._frag_op, self._frags, self._frag_size = -1, [], 0


# ----------------------------------------------------------------------------- connection


@dataclass(frozen=True)
class Target:
    """Where a ``ws://`` / ``wss://`` URL points."""

    secure: bool
    host: str
    port: int
    resource: str  # path and query

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return name if self.port == default else f"{name}:{self.port}"


def parse_url(url: str) -> Target:
    """A ``ws://`` or ``wss://`` URL's parts; :class:`ValueError` for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"{url!r}: expected a ws:// or wss:// URL with a host")
    secure = parts.scheme == "wss"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(secure, parts.hostname, parts.port or (443 if secure else 80), resource)


class WebSocket:
    """An open client connection (made by :func:`connect`); see the module docstring.

    Two ways to read. A greenlet (or thread) sits in :meth:`recv_batch`; or an event loop
    calls :meth:`read_ready` each time the socket is readable — from a gevent hub
    callback, say, with no greenlet switch per read. Such a caller sets
    :attr:`read_elsewhere` (so :meth:`close` waits for it to see the server's close
    frame), :attr:`defer` (replies to pings and close frames are then written from what
    ``defer`` runs, never from the callback, which must not block) and
    :attr:`on_shutdown` (to stop watching the socket before it is closed). Writes are
    serialised by a lock, so a pong or close frame never lands inside another frame.
    """

    def __init__(
        self, sock: socket.socket, subprotocol: str, leftover: bytes, max_size: int
    ) -> None:
        self.sock = sock
        self.subprotocol = subprotocol
        self._parser = FrameParser(max_size)
        self._pending = self._parser.feed(leftover) if leftover else []
        self._write_lock = threading.Lock()
        self._masks, self._mask_at = b"", 0
        self._peer_closed = threading.Event()
        self._reading = False
        self.read_elsewhere = False
        """Someone calls :meth:`read_ready`: :meth:`close` waits for it to see the close."""
        self.defer: Callable[[Callable[[], None]], object] | None = None
        """Runs a control-frame reply later (e.g. ``gevent.spawn``); None = at once."""
        self.on_shutdown: Callable[[], None] | None = None
        """Called just before the socket is closed (e.g. to stop an I/O watcher)."""
        self.close_sent = False
        self.closed: ConnectionClosed | None = None
        """Set once the connection is over: how it ended."""

    def send(self, payload: bytes, text: bool) -> None:
        """Send one message (a text or binary frame). :class:`ConnectionClosed` when the
        connection is over or the socket fails."""
        if self.closed is not None or self.close_sent:
            raise self.closed or ConnectionClosed(CLOSE_NORMAL, "closing")
        self._write(client_frame(OP_TEXT if text else OP_BINARY, payload, self._mask()))

    def _write(self, frame: bytes) -> None:
        try:
            with self._write_lock:
                sent = self.sock.send(frame)  # a small frame usually goes out whole
                if sent < len(frame):
                    self.sock.sendall(frame[sent:])
        except OSError as exc:
            raise self._lost(f"send failed: {exc}") from None

    def _mask(self) -> bytes:
        """A fresh random masking key, from ``os.urandom`` read 4 KiB at a time."""
        if self._mask_at >= len(self._masks):
            self._masks, self._mask_at = os.urandom(4096), 0
        at = self._mask_at
        self._mask_at = at + 4
        return self._masks[at : at + 4]

    def recv_batch(self) -> list[bytes]:
        """Block until at least one message arrived; return every message parsed so far
        (payload bytes, in order). Pings are answered here. :class:`ConnectionClosed`
        once the connection is over (a close frame, EOF, a socket error)."""
        self._reading = True
        try:
            while True:
                messages = self._handle(self._pending)
                self._pending = []
                if messages:
                    return messages
                if self.closed is not None:
                    raise self.closed
                self._pending = self._read()
        finally:
            self._reading = False

    def read_ready(self) -> list[bytes]:
        """Read once — the socket is readable, so this does not wait — and return the
        messages now complete (maybe none). Pings are answered (through :attr:`defer`).
        :class:`ConnectionClosed` when the connection is over; after a return,
        :attr:`closed` may be set too (the read ended with a close frame)."""
        if self.closed is not None:
            raise self.closed
        frames = self._pending + self._read() if self._pending else self._read()
        self._pending = []
        messages = self._handle(frames)
        if self.closed is not None and not messages:
            raise self.closed
        return messages

    def _read(self) -> list[tuple[int, bytes]]:
        try:
            data = self.sock.recv(RECV_BYTES)
        except OSError as exc:
            raise self._lost(f"recv failed: {exc}") from None
        if not data:
            raise self._lost("the server closed the TCP connection without a close frame")
        try:
            return self._parser.feed(data)
        except ProtocolError as exc:
            self._fail(exc)
            raise self.closed or ConnectionClosed(exc.code, str(exc)) from None

    def _handle(self, frames: list[tuple[int, bytes]]) -> list[bytes]:
        messages: list[bytes] = []
        for opcode, payload in frames:
            if opcode in (OP_TEXT, OP_BINARY):
                messages.append(payload)
            elif opcode == OP_PING:
                self._reply(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                self._on_close(payload)
                break  # nothing may follow a close frame
        return messages

    def _control(self, opcode: int, payload: bytes) -> None:
        with contextlib.suppress(ConnectionClosed):  # the next read reports it
            self._write(client_frame(opcode, payload, self._mask()))

    def _reply(self, opcode: int, payload: bytes, then_shutdown: bool = False) -> None:
        """A control frame in answer to the server's, now or through :attr:`defer`; with
        ``then_shutdown`` the socket is closed after it was written."""

        def write() -> None:
            self._control(opcode, payload)
            if then_shutdown:
                self._shutdown()

        if self.defer is None:
            write()
        else:
            self.defer(write)

    def _on_close(self, payload: bytes) -> None:
        try:
            code, reason = parse_close(payload)
        except ProtocolError as exc:
            self._fail(exc)
            return
        self.closed = ConnectionClosed(code, reason)
        self._peer_closed.set()
        if self.close_sent:
            self._shutdown()
        else:
            self.close_sent = True
            self._reply(OP_CLOSE, payload[:2], then_shutdown=True)

    def _fail(self, exc: ProtocolError) -> None:
        """The server broke the protocol: close with its code and drop the socket."""
        self.closed = ConnectionClosed(exc.code, str(exc))
        self._peer_closed.set()
        if self.close_sent:
            self._shutdown()
        else:
            self.close_sent = True
            self._reply(OP_CLOSE, close_payload(exc.code, str(exc)[:100]), then_shutdown=True)

    def _lost(self, why: str) -> ConnectionClosed:
        if self.closed is None:
            self.closed = ConnectionClosed(CLOSE_ABNORMAL, why)
        self._peer_closed.set()
        self._shutdown()
        return self.closed

    def _shutdown(self) -> None:
        if self.on_shutdown is not None:
            self.on_shutdown()
        with contextlib.suppress(OSError):
            self.sock.close()

    def close(self, code: int = CLOSE_NORMAL, timeout_s: float = 1.0) -> None:
        """The closing handshake: send a close frame, wait (≤ ``timeout_s``) for the
        server's, close the socket. Safe to call twice or after the connection ended."""
        if self.closed is not None:
            return
        if not self.close_sent:
            self.close_sent = True
            try:
                self._write(client_frame(OP_CLOSE, close_payload(code), self._mask()))
            except ConnectionClosed:
                return
        if self._reading or self.read_elsewhere:  # the reader will see the server's close
            self._peer_closed.wait(timeout_s)
        else:
            self._drain_until_close(timeout_s)
        if self.closed is None:
            self.closed = ConnectionClosed(code, "closed by us")
        self._shutdown()

    def _drain_until_close(self, timeout_s: float) -> None:
        try:
            self.sock.settimeout(timeout_s)
            while self.closed is None:
                self._handle(self._pending)
                self._pending = [] if self.closed is not None else self._read()
        except (ConnectionClosed, OSError):
            pass


def connect(
    url: str,
    *,
    subprotocols: Sequence[str] = (),
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    timeout_s: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> WebSocket:
    """Open a WebSocket: TCP (``TCP_NODELAY``), TLS for ``wss://``, the handshake.

    ``timeout_s`` bounds the connect and the handshake; reads after it block until data.
    Raises :class:`OSError` (TCP, TLS, timeout), :class:`HandshakeError`, or
    :class:`ValueError` for a URL that is not ``ws://`` / ``wss://``.
    """
    target = parse_url(url)
    sock = socket.create_connection((target.host, target.port), timeout=timeout_s)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if target.secure:
            context = ssl_context or ssl.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=target.host)
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        sock.sendall(
            handshake_request(target.host_header, target.resource, key, subprotocols, headers)
        )
        head, leftover = _read_head(sock)
        chosen = parse_handshake_response(head, key, subprotocols)
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return WebSocket(sock, chosen, leftover, max_size)


def _read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The HTTP answer's head (up to the blank line) and whatever bytes followed it."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEAD_BYTES:
            raise HandshakeError(f"answer head over {MAX_HEAD_BYTES} bytes")
        chunk = sock.recv(4096)
        if not chunk:
            raise HandshakeError("the server closed the connection during the handshake")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest
