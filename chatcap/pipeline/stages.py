"""The stages of a Send, named once for the server, the model and the tools.

A Send between the moment its frame is read and the moment its Ack is written:

============  ==================================================================
stage         from → to
============  ==================================================================
``ingress``   the frame read → the write queue (decode, limiter, checks, dedup)
``queue``     the write queue → its batch cut
``commit``    the batch cut → its rows settled (pool wait, commit turn, commit)
``fanout``    the Delivers to the room's other members
``ack``       the Ack's encode and write
============  ==================================================================

What the ack latency holds beyond the five (the loop's turns between a commit's result
and the Ack, the per-batch work) is the ack mean less the stages' means, on the server
(``chatcap_send_stage_seconds{stage}``) and in the model alike.
"""

from __future__ import annotations

__all__ = ["GC_GENERATIONS", "SEND_STAGES"]

SEND_STAGES: tuple[str, ...] = ("ingress", "queue", "commit", "fanout", "ack")
"""The stages in a Send's order: ``chatcap_send_stage_seconds``'s ``stage`` label values,
the model's stage columns (``server_stage_<stage>_ms``)."""

GC_GENERATIONS: tuple[str, ...] = ("0", "1", "2")
"""The other thing that holds a Send up without a stage of its own: CPython's collector.
``chatcap_gc_pause_seconds``'s ``generation`` label values, one per generation, as the
server labels them and ``bench calibrate`` reads them."""
