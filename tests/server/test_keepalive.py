"""Keepalive pings: ``server.ping_interval_s`` and ``server.ping_timeout_s``.

The two keys are validated like every other ``server.*`` key (0 = off, else a range),
:func:`server.app.websocket_options` hands them to websockets (0 → None), and a real
:class:`server.app.ChatServer`, started in this process, pings a connection at the
configured interval and closes one that leaves its pings unanswered.

The client of the live tests is websockets' sans-I/O :class:`ClientProtocol` over a
plain asyncio stream, so the test sees every frame the server sends — pings included,
which websockets' own clients answer out of sight — and decides whether the pongs the
protocol queues are written at all. Waits are bounded by ``asyncio.timeout`` (stretched
by ``CHATCAP_TIMING_FACTOR``); nothing sleeps.
"""

from __future__ import annotations

import asyncio
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from chatcap.scenario import Scenario, ScenarioError, load_scenario, load_scenario_data, to_toml
from server.app import ChatServer, websocket_options
from tests.server.conftest import SECRET, scaled
from tests.server.support_pipeline import scenario_with

KEYS = ("ping_interval_s", "ping_timeout_s")
ALLOWED = "0 or ≥ 0.05 and ≤ 3600"

# ------------------------------------------------------------------------ the scenario keys


def test_both_keys_default_to_the_websockets_defaults() -> None:
    cfg = Scenario().server
    assert (cfg.ping_interval_s, cfg.ping_timeout_s) == (20.0, 20.0)
    options = websocket_options(cfg)
    assert (options["ping_interval"], options["ping_timeout"]) == (20.0, 20.0)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("value", [0, 0.05, 0.25, 1, 30.5, 3600])
def test_a_good_value_loads_and_round_trips_through_the_printout(key: str, value: float) -> None:
    scenario = Scenario().with_overrides({f"server.{key}": value})
    assert getattr(scenario.server, key) == float(value)
    again = load_scenario_data(tomllib.loads(to_toml(scenario)), source="<reprint>")
    assert again == scenario


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (-1, "-1"),
        (-0.5, "-0.5"),
        (0.01, "0.01"),
        (0.049, "0.049"),
        (3601, "3601"),
        (1e9, "1000000000"),
    ],
)
def test_a_bad_value_in_a_file_is_one_line_naming_file_key_value_and_range(
    tmp_path: Path, key: str, value: float, shown: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f"[server]\n{key} = {value!r}\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == f"{path}: server.{key} = {shown}: must be {ALLOWED}"


@pytest.mark.parametrize("key", KEYS)
def test_a_bad_override_gets_the_same_error(key: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        Scenario().with_overrides({f"server.{key}": -2})
    assert str(caught.value) == f"<overrides>: server.{key} = -2: must be {ALLOWED}"
    with pytest.raises(ScenarioError, match=rf"server\.{key} = inf: must be 0 or"):
        Scenario().with_overrides({f"server.{key}": float("inf")})
    with pytest.raises(ScenarioError, match=rf"server\.{key} = 'soon': must be a number"):
        Scenario().with_overrides({f"server.{key}": "soon"})


@pytest.mark.parametrize(
    ("interval", "timeout", "expected"),
    [
        (0.25, 5.0, (0.25, 5.0)),
        (0.0, 5.0, (None, 5.0)),
        (0.25, 0.0, (0.25, None)),
        (0.0, 0.0, (None, None)),
    ],
)
def test_websocket_options_turn_0_into_none_and_pass_numbers_through(
    interval: float, timeout: float, expected: tuple[float | None, float | None]
) -> None:
    cfg = scenario_with({"server.ping_interval_s": interval, "server.ping_timeout_s": timeout})
    options = websocket_options(cfg.server)
    assert (options["ping_interval"], options["ping_timeout"]) == expected


# ------------------------------------------------------------------------ a live server


class RawClient:
    """One WebSocket connection on the sans-I/O protocol: :meth:`frame` returns the next
    frame the server sent; the pongs the protocol queues for pings go out only when
    ``answer_pings`` (a client that stopped answering otherwise)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        protocol: ClientProtocol,
        answer_pings: bool,
    ) -> None:
        self.reader, self.writer, self.protocol = reader, writer, protocol
        self.answer_pings = answer_pings
        self.events: list[Any] = []

    async def _event(self) -> Any:
        while not self.events:
            data = await self.reader.read(65536)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            self.events += self.protocol.events_received()
            queued = b"".join(self.protocol.data_to_send())
            if queued and self.answer_pings and not self.writer.is_closing():
                self.writer.write(queued)
            if not data and not self.events:
                raise ConnectionError("the server closed the connection without a frame")
        return self.events.pop(0)

    async def handshake(self) -> None:
        response = await self._event()
        assert isinstance(response, Response), response
        assert response.status_code == 101, response

    async def frame(self) -> Frame:
        event = await self._event()
        assert isinstance(event, Frame), event
        return event


@asynccontextmanager
async def live_server(tmp_path: Path, overrides: dict[str, Any]) -> AsyncIterator[ChatServer]:
    """A :class:`ChatServer` on a free port with ``overrides`` on the smoke scenario."""
    app = ChatServer(
        scenario_with(overrides),
        port=0,
        db_path=str(tmp_path / "chat.db"),
        env={"CHATCAP_JWT_SECRET": SECRET},
    )
    await app.start()
    try:
        yield app
    finally:
        await app.shutdown()


@asynccontextmanager
async def raw_client(app: ChatServer, *, answer_pings: bool) -> AsyncIterator[RawClient]:
    """A handshaken :class:`RawClient` of user ``alice`` on ``app``."""
    token, _ = app.tokens.issue("alice", time.time())
    protocol = ClientProtocol(parse_uri(app.ws_url), subprotocols=[Subprotocol("chat.v1.json")])
    request = protocol.connect()
    request.headers["Authorization"] = f"Bearer {token}"
    protocol.send_request(request)
    reader, writer = await asyncio.open_connection(app.host, app.port)
    writer.write(b"".join(protocol.data_to_send()))
    client = RawClient(reader, writer, protocol, answer_pings)
    try:
        await client.handshake()
        yield client
    finally:
        writer.close()


def test_the_server_pings_at_the_interval_and_keeps_a_client_that_answers(
    tmp_path: Path,
) -> None:
    async def body() -> list[Opcode]:
        overrides = {"server.ping_interval_s": 0.2, "server.ping_timeout_s": 0.2}
        async with (
            live_server(tmp_path, overrides) as app,
            raw_client(app, answer_pings=True) as client,
        ):
            seen: list[Opcode] = []
            # at the default 20 s no ping would come within this bound
            async with asyncio.timeout(scaled(1.0)):
                while seen.count(Opcode.PING) < 1:
                    seen.append((await client.frame()).opcode)
            # each answered within the 0.2 s timeout: still open three pings later
            async with asyncio.timeout(scaled(3.0)):
                while seen.count(Opcode.PING) < 4:
                    seen.append((await client.frame()).opcode)
            return seen

    seen = asyncio.run(body())
    assert Opcode.CLOSE not in seen
    assert seen.count(Opcode.PING) == 4


def test_a_client_that_leaves_pings_unanswered_is_closed_with_1011(tmp_path: Path) -> None:
    async def body() -> tuple[list[Opcode], Close]:
        overrides = {"server.ping_interval_s": 0.2, "server.ping_timeout_s": 0.2}
        async with (
            live_server(tmp_path, overrides) as app,
            raw_client(app, answer_pings=False) as client,
        ):
            seen: list[Opcode] = []
            async with asyncio.timeout(scaled(2.0)):
                while not seen or seen[-1] is not Opcode.CLOSE:
                    frame = await client.frame()
                    seen.append(frame.opcode)
            return seen, Close.parse(frame.data)

    seen, close = asyncio.run(body())
    assert seen[0] is Opcode.PING
    assert close.code == CloseCode.INTERNAL_ERROR
    assert close.reason == "keepalive ping timeout"
