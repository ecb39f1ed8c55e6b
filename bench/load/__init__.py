"""The Locust side of the bench (gevent): users, their plan, the run's report.

Nothing here is imported by this ``__init__``: :mod:`~bench.load.plan`,
:mod:`~bench.load.report`, :mod:`~bench.load.loss`, :mod:`~bench.load.tally` and
:mod:`~bench.load.wsclient` are plain Python (the orchestrator in :mod:`bench.run` reads
some of them too; the client's sockets are gevent's only where Locust patched them),
while :mod:`~bench.load.users`, :mod:`~bench.load.runstate`, :mod:`~bench.load.history`
and :mod:`~bench.load.webui` import Locust and gevent and must never meet asyncio in one
process.

* :mod:`~bench.load.users` — :class:`~bench.load.users.ChatUser`, the open-loop chat user;
* :mod:`~bench.load.runstate` — the ``--chat-*`` options, per-process state, run events;
* :mod:`~bench.load.history` — REST history readers (``bench/locust_history.py``);
* :mod:`~bench.load.webui` — chatcap in Locust's web UI (the start form's check, the
  ledger tab);
* :mod:`~bench.load.plan` — rooms, codecs, send schedules, bodies: the plan's rules;
* :mod:`~bench.load.report` — a process's figures, the merged ``--chat-out`` document;
* :mod:`~bench.load.loss` — the loss ledger (drops and duplicates by sequence number);
* :mod:`~bench.load.tally` — latencies counted by histogram bucket on the hot path;
* :mod:`~bench.load.wsclient` — the users' lean RFC 6455 WebSocket client.

The locustfiles stay at ``bench/locustfile.py`` and ``bench/locust_history.py``.
"""
