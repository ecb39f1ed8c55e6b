"""The statistical CI regression gate, ``python -m bench regress`` (see docs/ci-gate.md).

* :mod:`~bench.gate.metrics` — what a trial measures; ``trials.csv``'s columns;
* :mod:`~bench.gate.probe` — the machine-speed probe (CPU figures ÷ its speed factor);
* :mod:`~bench.gate.trials` — measuring: fresh servers, trials into a run folder;
* :mod:`~bench.gate.verdict` — comparing two run folders (Mann-Whitney + a 10 % floor);
* :mod:`~bench.gate.quality` — the gate's own flag rates (``--quality``);
* :mod:`~bench.gate.cli` — the command line.

Imports go one way: metrics ← probe, trials, verdict ← quality ← cli.
"""
