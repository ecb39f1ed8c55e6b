"""One line per event, ``key=value`` (logfmt), never a secret.

``event(log, "send.rejected", user="ann", code="rate_limited")`` writes
``event=send.rejected user=ann code=rate_limited``. Values with spaces or quotes are
quoted. Tokens, passwords and secrets are never passed here; :data:`REDACT` names keys
that are blanked anyway in case one slips through.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

REDACT = frozenset({"token", "password", "secret", "authorization"})


def _value(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def line(name: str, **fields: Any) -> str:
    parts = [f"event={name}"]
    for key, value in fields.items():
        parts.append(f"{key}={'***' if key in REDACT else _value(value)}")
    return " ".join(parts)


def event(log: logging.Logger, name: str, level: int = logging.INFO, /, **fields: Any) -> None:
    if log.isEnabledFor(level):
        log.log(level, line(name, **fields))


def configure(level: str = "INFO") -> None:
    """Log to stderr, one line per record, with a UTC timestamp."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # websockets logs each rejected handshake at INFO with a traceback-free line; keep
    # its noise at WARNING so our own event lines stay readable.
    logging.getLogger("websockets").setLevel(logging.WARNING)
