"""bench: measuring the server, asking the model, and the jobs that tie them together.

``python -m bench <verb>`` (:mod:`bench.cli`) is the entry point; ``locust -f
bench/locustfile.py`` (and ``bench/locust_history.py`` beside it) the Locust one. The
package is cut into concept folders; a folder imports only from the folders above it:

* :mod:`bench._support` — shared plumbing, no benchmark of its own: server processes,
  the asyncio load client run as a subprocess, the ``/proc`` readers, host limits,
  argument helpers, ``/metrics`` scraping, HdrHistograms, the repository root;
* :mod:`bench.load` — the Locust side (gevent): chat users, history readers, their
  plan, the per-process report, the loss ledger;
* :mod:`bench.run` — the orchestrator of measured runs (``run``): the server under
  Locust, point by point, into a results run folder;
* :mod:`bench.micro` — benchmarks against a baseline timed in the same run: codecs
  (``codecs``), server overhead vs a bare ``websockets`` server (``server-overhead``),
  the model's speed vs bare SimPy (``sim-speed``), the load generator (``generator``);
* :mod:`bench.gate` — the statistical regression gate (``regress``);
* :mod:`bench.analysis` — the notebooks' logic (``from bench import analysis as an``);
* :mod:`bench.jobs` — the jobs: ``demo``, ``calibrate``, ``notebooks``, ``reliability``.

gevent and asyncio never meet in one module or one process: :mod:`bench.load`'s users
run only inside Locust, started as a subprocess by :mod:`bench.run` and
:mod:`bench.micro.genbench`; the asyncio client (:mod:`bench.micro.loadclient`) and the
bare server run in processes of their own.
"""
