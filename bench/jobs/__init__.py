"""The jobs: commands that run other commands and write what a user reads.

* :mod:`~bench.jobs.demo` — ``python -m bench demo`` (``make demo``): calibrate,
  measure, predict, notebooks, summary in one folder;
* :mod:`~bench.jobs.calibrate` (+ :mod:`~bench.jobs.calibrate_fit`) — ``calibrate``:
  per-operation costs for the model → ``results/calibration/<host>.json``;
* :mod:`~bench.jobs.notebooks` — ``notebooks``: run them headless, or ``--check`` them;
* :mod:`~bench.jobs.reliability` — ``reliability``: the full suite and its report.
"""
