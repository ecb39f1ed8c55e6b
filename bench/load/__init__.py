"""The Locust side of the bench (gevent): users, their plan, the run's report.

Nothing here is imported by this ``__init__``: :mod:`~bench.load.plan`,
:mod:`~bench.load.report` and :mod:`~bench.load.loss` are plain Python (the orchestrator
in :mod:`bench.run` reads them too), while :mod:`~bench.load.users`,
:mod:`~bench.load.runstate`, :mod:`~bench.load.history` and :mod:`~bench.load.webui`
import Locust and gevent and
must never meet asyncio in one process.

* :mod:`~bench.load.users` — :class:`~bench.load.users.ChatUser`, the open-loop chat user;
* :mod:`~bench.load.runstate` — the ``--chat-*`` options, per-process state, run events;
* :mod:`~bench.load.history` — REST history readers (``bench/locust_history.py``);
* :mod:`~bench.load.webui` — chatcap in Locust's web UI (the start form's check, the
  ledger tab);
* :mod:`~bench.load.plan` — rooms, codecs, send schedules, bodies: the plan's rules;
* :mod:`~bench.load.report` — a process's figures, the merged ``--chat-out`` document;
* :mod:`~bench.load.loss` — the loss ledger (drops and duplicates by sequence number).

The locustfiles stay at ``bench/locustfile.py`` and ``bench/locust_history.py``.
"""
