"""A WebSocket client on a plain blocking socket, framed by the sans-I/O ``websockets``
client: what the flood and slow-consumer cases need and a library client hides — the
socket itself (its receive buffer, writes of pre-framed bytes from another thread) and
every frame the server sends, the close frame included."""

from __future__ import annotations

import socket
from collections import deque
from typing import Any

from websockets.client import ClientProtocol
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri


class RawClient:
    """Connects ``sock`` (already configured by the caller), performs the handshake with
    a Bearer ``token`` and ``subprotocol``; raises RuntimeError when refused.

    ``answer_control``: after each read, send what the protocol wants to send back (pong,
    close reply). Leave it off when another thread writes to the socket."""

    def __init__(
        self,
        sock: socket.socket,
        url: str,
        token: str,
        subprotocol: str,
        *,
        recv_bytes: int = 65536,
        answer_control: bool = True,
    ) -> None:
        uri = parse_uri(url)
        sock.connect((uri.host, uri.port))
        self.sock = sock
        self.recv_bytes = recv_bytes
        self.answer_control = answer_control
        self.protocol = ClientProtocol(uri, subprotocols=[Subprotocol(subprotocol)], max_size=None)
        self.events: deque[Any] = deque()
        request = self.protocol.connect()
        request.headers["Authorization"] = f"Bearer {token}"
        self.protocol.send_request(request)
        self.flush()
        response = self.next_event()
        if not isinstance(response, Response) or response.status_code != 101:
            raise RuntimeError(f"handshake refused: {response!r}"[:300])

    def flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def next_event(self) -> Any:
        """The next event: the handshake's Response, then Frames; EOFError at the end."""
        while not self.events:
            data = self.sock.recv(self.recv_bytes)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            self.events.extend(self.protocol.events_received())
            if self.answer_control:
                self.flush()
            if not data and not self.events:
                raise EOFError("the server closed the connection")
        return self.events.popleft()

    def close(self) -> None:
        self.sock.close()
