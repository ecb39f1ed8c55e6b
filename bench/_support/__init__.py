"""Shared plumbing of the benchmarks: no benchmark of its own, no gevent, no Locust.

* :mod:`~bench._support.paths` — :data:`~bench._support.paths.REPO_ROOT`;
* :mod:`~bench._support.args` — ``--set`` overrides, one-line argument errors;
* :mod:`~bench._support.host` — open-files limit, uvloop;
* :mod:`~bench._support.procstat` — the ``/proc`` CPU and memory readers;
* :mod:`~bench._support.servers` — server processes (start, listen line, stop);
* :mod:`~bench._support.tls` — the client side of TLS: ``wss://`` → ``https://``, the CA
  a scenario's clients trust (a context, a subprocess's environment), throwaway certificates;
* :mod:`~bench._support.clients` — the asyncio load client (:mod:`bench.micro.loadclient`)
  run as a subprocess, one case at a time;
* :mod:`~bench._support.metrics_scrape` — the server's ``/metrics``, parsed and differenced;
* :mod:`~bench._support.histo` — HdrHistograms of latency in µs, mergeable, as text.
"""
