"""A second locustfile: REST history readers, to run beside the chat users.

    locust -f bench/locustfile.py,bench/locust_history.py --host http://127.0.0.1:8765 …

:class:`HistoryReader` pages through ``GET /api/v1/rooms/{room}/messages`` of the rooms
this process's chat users joined (or ``r{worker}-0`` before any did), one request per
second per reader, asking for JSON or Protobuf with the ``Accept`` header — each reader
takes its codec like a chat user does (``--chat-codec``, or the scenario's mix). Every
page is decoded with the project's codec (a page that does not decode is a failure) and
its round trip goes into the ``history`` histogram of the run's ``--chat-out`` file, as
well as Locust's own statistics (``GET /api/v1/rooms/[room]/messages json|protobuf``).

Kept out of ``bench/locustfile.py`` so that a plain run starts chat users only; the
options and the per-process bookkeeping are shared through :mod:`bench.load.users`.
"""

from __future__ import annotations

import base64
import time

from locust import constant_throughput, task
from locust.contrib.fasthttp import FastHttpUser

from bench.load.plan import user_rng
from bench.load.runstate import PASSWORD, RUN
from chatcap.protocol import Codec, DecodeError, HistoryPage, get_codec

__all__ = ["HistoryReader"]

PAGE_LIMIT = 100


class HistoryReader(FastHttpUser):
    """Reads room history over REST, page after page, in its codec."""

    wait_time = constant_throughput(1.0)
    weight = 1  # one user in ten beside the chat users (weight 9)
    codec_name: str | None = None
    """``"json"`` / ``"protobuf"``; None = ``--chat-codec`` (and the mix) decides."""

    def on_start(self) -> None:
        if RUN.plan is None:
            raise RUN.no_plan()
        self.n = RUN.next_reader()
        self.login = f"h{RUN.worker}-{self.n}"
        self.codec: Codec = get_codec(self.codec_name or RUN.reader_codecs.codec_of(self.n))
        self.rng = user_rng(RUN.plan.seed, RUN.worker, self.n, "history")
        self.after_seq: dict[str, int] = {}
        self.token = self._token()

    def _token(self) -> str:
        basic = base64.b64encode(f"{self.login}:{PASSWORD}".encode()).decode()
        resp = self.client.get(
            "/api/v1/token", headers={"Authorization": f"Basic {basic}"}, name="/api/v1/token"
        )
        return str(resp.json()["token"]) if resp.status_code == 200 else ""

    def _room(self) -> str:
        rooms = RUN.rooms_joined
        return self.rng.choice(rooms) if rooms else f"r{RUN.worker}-0"

    @task
    def read_page(self) -> None:
        """Fetch the next page of one room; wrap around to the start at the end."""
        room = self._room()
        after = self.after_seq.get(room, 0)
        started = time.perf_counter_ns()
        with self.client.get(
            f"/api/v1/rooms/{room}/messages?after_seq={after}&limit={PAGE_LIMIT}",
            headers={"Authorization": f"Bearer {self.token}", "Accept": self.codec.content_type},
            name=f"/api/v1/rooms/[room]/messages {self.codec.name}",
            catch_response=True,
        ) as resp:
            elapsed_us = (time.perf_counter_ns() - started) // 1000
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
                return
            try:
                page = self.codec.decode(resp.content or b"")
            except DecodeError as exc:
                resp.failure(f"undecodable page: {exc.reason}")
                return
            if not isinstance(page, HistoryPage):
                resp.failure(f"expected a history page, got {type(page).__name__}")
                return
            if RUN.stats is not None:
                RUN.stats.histograms.record_us("history", self.codec.name, elapsed_us)
            self.after_seq[room] = page.next_after_seq if page.has_more else 0
