"""Test-side helpers: a handle on the server process and a small synchronous chat client.

The client is the real ``websockets.sync.client`` plus the project's codecs, so these
tests exercise the same wire format as the load generator.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from chatcap.protocol import CODECS, Envelope, Send

_ids = iter(range(1, 10**9))


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    admin_token: str
    factor: float

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/ws"

    def log(self) -> str:
        return self.log_path.read_text()

    def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.http + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10 * self.factor) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as err:
            body = err.read()
            err.close()
            return err.code, dict(err.headers), body

    def token(self, user: str, password: str = "pw") -> str:
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        status, _, body = self.get("/api/v1/token", {"Authorization": f"Basic {basic}"})
        assert status == 200, body
        return str(json.loads(body)["token"])

    def admin(self, query: str) -> dict[str, Any]:
        status, _, body = self.get(
            f"/api/v1/admin/faults?{query}", {"Authorization": f"Bearer {self.admin_token}"}
        )
        assert status == 200, body
        return dict(json.loads(body))

    def metric(self, name: str) -> float:
        """Sum of every sample of a metric family (all label values)."""
        _, _, body = self.get("/metrics")
        total = 0.0
        for line in body.decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def client(self, user: str, codec: str = "json", **kwargs: Any) -> ChatClient:
        return ChatClient(self, user, codec, **kwargs)

    def wait_exit(self, timeout_s: float) -> int:
        return self.proc.wait(timeout=timeout_s * self.factor)


class ChatClient:
    """One user on one connection, speaking one codec."""

    def __init__(
        self, server: ServerProcess, user: str, codec: str = "json", token: str | None = None
    ) -> None:
        self.server = server
        self.user = user
        self.codec = CODECS[codec]
        self.token = token or server.token(user)
        self.ws: ClientConnection = connect(
            server.ws_url,
            subprotocols=[self.codec.subprotocol],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {self.token}"},
            open_timeout=10 * server.factor,
        ).__enter__()  # websockets ≥ 17.1 wants the context-manager protocol

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ws.close()

    def send(self, msg: Envelope) -> None:
        self.ws.send(self.codec.encode(msg), text=self.codec.text)

    def send_text(self, room: str, body: str, client_msg_id: str | None = None) -> str:
        cid = client_msg_id or f"{self.user}-{next(_ids)}"
        self.send(Send(client_msg_id=cid, room=room, body=body, sent_at_us=time.time_ns() // 1000))
        return cid

    def recv(self, timeout_s: float = 5.0) -> Envelope:
        frame = self.ws.recv(timeout=timeout_s * self.server.factor)
        return self.codec.decode(frame)

    def reply(self, timeout_s: float = 5.0) -> Any:
        """The next Ack or Error (the answer to a Send), skipping Delivers."""
        from chatcap.protocol import Deliver

        while True:
            msg = self.recv(timeout_s)
            if not isinstance(msg, Deliver):
                return msg

    def recv_kind(self, kind: type, timeout_s: float = 5.0) -> Any:
        """The next frame of ``kind``, skipping others (e.g. other members' Delivers)."""
        deadline = time.monotonic() + timeout_s * self.server.factor
        while True:
            msg = self.recv(max(0.01, deadline - time.monotonic()) / self.server.factor)
            if isinstance(msg, kind):
                return msg

    def join(self, room: str, since_seq: int | None = None) -> Any:
        from chatcap.protocol import Join, Joined

        self.send(Join(room=room, since_seq=since_seq))
        return self.recv_kind(Joined)

    def leave(self, room: str) -> Any:
        """Send a Leave and return its Left (frames before it, e.g. Delivers, skipped)."""
        from chatcap.protocol import Leave, Left

        self.send(Leave(room=room))
        return self.recv_kind(Left)
