"""A second locustfile: REST history readers, to run beside the chat users.

    locust -f bench/locustfile.py,bench/locust_history.py --host http://127.0.0.1:8765 …

The reader, :class:`bench.load.history.HistoryReader`, pages through a room's history
over REST in its codec; see :mod:`bench.load.history`. Kept out of
``bench/locustfile.py`` so that a plain run starts chat users only.
"""

from bench.load.history import HistoryReader

__all__ = ["HistoryReader"]
