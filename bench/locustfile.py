"""chatcap's locustfile: open-loop WebSocket chat users, JSON or Protobuf, driven by a scenario.

Run it against a server (``python -m server --scenario … --port 8765``)::

    locust -f bench/locustfile.py --host http://127.0.0.1:8765              # web UI
    locust -f bench/locustfile.py --host http://127.0.0.1:8765 --headless \\
        -u 200 -r 50 -t 30s --chat-codec protobuf --chat-out out.json
    locust -f bench/locustfile.py,bench/locust_history.py …                 # + REST readers

Distributed (one process per core)::

    locust -f bench/locustfile.py --master --headless --expect-workers 2 -u … -t … \\
        --chat-out out.json --chat-out-worker 'out-{worker}.json'
    locust -f bench/locustfile.py --worker        # twice (or: --processes 2 on the master)

The one user class, :class:`bench.load.users.ScenarioUser`, is a chat room member
whose codec comes from ``--chat-codec`` (``json``, ``protobuf``, or ``mix`` = the
scenario's ``workload.codec_mix``, dealt in its shares); subclass
:class:`bench.load.users.ChatUser` with ``codec_name = "json"`` to pin one. Rooms fill in
turn to ``room_size``: user n of worker w is in room ``r{w}-{n // size}``. Sends are open
loop (intended times, Poisson or constant), with ack latency measured from the intended
time; see :mod:`bench.load.users` for the user and :mod:`bench.load.plan` for the
rules. The server must run with ``server.auth = "open"`` (users log in with any name).

Options (also in the web UI, under "Custom parameters"): ``--chat-codec``,
``--chat-scenario`` (the server's scenario; default ``scenarios/baseline.toml``; a
relative path is looked up in the working directory, then in the project root),
``--chat-room-size``, ``--chat-send-rate`` (per user per s), ``--chat-body-bytes``,
``--chat-seed``, ``--chat-arrival``; command line only: ``--chat-out FILE``,
``--chat-out-worker PATTERN``. A bad value ends a headless Locust at start with one line
(status 2); in the web UI it refuses the swarm and the form shows why
(:mod:`bench.load.webui`).

The ``--chat-out`` JSON file has the keys ``schema``, ``mode``, ``plan``,
``started_unix_s``, ``stopped_unix_s``, ``histograms`` (``{name: {codec: HdrHistogram
base64}}``, µs: ``ack``, ``ack_from_send``, ``deliver``, ``schedule_lag``, ``history``),
``summary`` (count, mean and percentiles in ms per histogram), ``loss`` (sent, retries,
acked, failed, unacked, delivered, missing, duplicated, receivers), ``loss_by_codec``
(the same per codec), ``errors`` (by code,
plus ``timeout``, ``closed``, ``connect``), ``outcomes``, ``generator`` (CPU seconds and
%, max and p99 schedule lag, sends intended vs sent, connects, ``kept_pace`` and the
``limits`` that say why not), ``workers`` and ``missing_workers`` — each documented in
:mod:`bench.load.report`.

Locust's own rows ``send→ack {codec}`` and ``deliver {codec}`` count every ack and
delivery, folded into Locust's statistics once a second rather than one ``request``
event each (failures still are one event each): see :mod:`bench.load.users`.

In the web UI, the *chatcap ledger* tab shows the loss ledger per codec during and after
a test, and ``GET /chatcap/ledger`` answers it as JSON (:mod:`bench.load.webui`).
"""

from bench.load.users import ScenarioUser

__all__ = ["ScenarioUser"]
