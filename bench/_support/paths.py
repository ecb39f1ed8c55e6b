"""Where the checkout is: every path a command resolves against the repository root."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository root (the folder holding ``bench/``, ``scenarios/``, ``results/``)."""
