"""Micro-benchmarks: each measures one thing against a baseline timed in the same run.

* :mod:`~bench.micro.codec_bench` — ``python -m bench codecs``: our codecs vs the bare
  libraries (bytes, ns per op);
* :mod:`~bench.micro.server_overhead` — ``server-overhead``: the server's CPU per message
  vs :mod:`~bench.micro.bare_server` (a bare ``websockets`` server), driven by
  :mod:`~bench.micro.loadclient` (asyncio, a process of its own);
* :mod:`~bench.micro.sim_speed` — ``sim-speed``: the model's sends per second vs bare SimPy;
* :mod:`~bench.micro.genbench` — ``generator``: one Locust process vs a bare sync loop.
"""
