"""The SimPy model of the chat server: predicts what ``server/`` would do under a
scenario, much faster than a load test, from the same ``chatcap.policy`` objects.

* :func:`run` — one replication → :class:`SimResult` (requests, deliveries and time
  series as pandas frames; ``.summary()`` rows in the results schema);
* :func:`sweep` — a grid of scenario overrides × replications on any
  ``concurrent.futures`` executor → mean and 95 % CI per point
  (:func:`sweep_runs` gives the replication rows);
* ``python -m sim --scenario FILE --out DIR`` — the same from the command line.

``sim.model`` holds the model itself (its docstring describes the stages and what each
send costs in events), ``sim.parts`` its records and worker state, ``sim.engine`` its
SimPy environment (the one module that reaches into SimPy), ``sim.calibration`` the
per-operation costs, ``sim.workload``
the users, rooms and arrivals, ``sim.stats`` the frames and summary rows, and
``sim.theory`` the queueing formulas the model is checked against.
"""

from sim.api import SimResult, replication_seed, run, summarize_runs, sweep, sweep_runs

__all__ = ["SimResult", "replication_seed", "run", "summarize_runs", "sweep", "sweep_runs"]
