"""Hypothesis strategies and sample envelopes shared by the protocol tests.

Valid strategies respect every limit in ``chatcap.protocol.messages``; text never holds
a surrogate code point (it cannot be UTF-8 encoded, so no codec can carry it).
"""

from typing import Any

from hypothesis import strategies as st

from chatcap.protocol.messages import (
    INT64_MAX,
    UINT32_MAX,
    Ack,
    Deliver,
    Envelope,
    Error,
    HistoryPage,
    Join,
    Joined,
    Leave,
    Left,
    Send,
)

CHAT_BODY = (
    "大家好！今天的会议改到下午三点 🎉🚀 please bring the Q3 capacity numbers; "
    "我们需要讨论 fan-out 延迟和 p99 的变化 👍 thanks — see you soon"
)

chars = st.characters(exclude_categories=["Cs"])
rooms = st.text(chars, min_size=1, max_size=128)
client_msg_ids = st.text(chars, min_size=1, max_size=64)
maybe_client_msg_ids = st.text(chars, max_size=64)
texts = st.text(chars, max_size=300)
non_negative_int64s = st.integers(0, INT64_MAX)
uint32s = st.integers(0, UINT32_MAX)

delivers = st.builds(
    Deliver,
    room=rooms,
    seq=non_negative_int64s,
    sender=texts,
    body=texts,
    ts_us=non_negative_int64s,
    client_msg_id=maybe_client_msg_ids,
    sent_at_us=non_negative_int64s,
)

ENVELOPES: dict[str, st.SearchStrategy[Any]] = {
    "join": st.builds(Join, room=rooms, since_seq=st.none() | non_negative_int64s),
    "joined": st.builds(Joined, room=rooms, last_seq=non_negative_int64s),
    "leave": st.builds(Leave, room=rooms),
    "send": st.builds(
        Send, client_msg_id=client_msg_ids, room=rooms, body=texts, sent_at_us=non_negative_int64s
    ),
    "ack": st.builds(
        Ack,
        client_msg_id=client_msg_ids,
        room=rooms,
        seq=non_negative_int64s,
        ts_us=non_negative_int64s,
    ),
    "deliver": delivers,
    "error": st.builds(
        Error, code=texts, message=texts, client_msg_id=maybe_client_msg_ids, retry_after_ms=uint32s
    ),
    "history": st.builds(
        HistoryPage,
        room=rooms,
        messages=st.lists(delivers, max_size=5).map(tuple),
        has_more=st.booleans(),
        next_after_seq=non_negative_int64s,
    ),
    "left": st.builds(Left, room=rooms),
}

envelopes: st.SearchStrategy[Envelope] = st.one_of(*ENVELOPES.values())


def sample_envelopes() -> list[Envelope]:
    """One or more hand-written valid envelopes of every kind (fuzzing seeds, examples)."""
    deliver = Deliver(
        room="room-42",
        seq=123456,
        sender="user-1234",
        body=CHAT_BODY,
        ts_us=1_700_000_000_123_456,
        client_msg_id="c-0001-abcdef",
        sent_at_us=1_700_000_000_100_000,
    )
    return [
        Join(room="lobby"),
        Join(room="lobby", since_seq=0),
        Join(room="r" * 128, since_seq=INT64_MAX),
        Joined(room="lobby", last_seq=17),
        Leave(room="lobby"),
        Send(client_msg_id="c1", room="lobby", body="hi", sent_at_us=1_700_000_000_000_000),
        Send(client_msg_id="x" * 64, room="lobby", body=CHAT_BODY),
        Ack(client_msg_id="c1", room="lobby", seq=18, ts_us=1_700_000_000_000_321),
        deliver,
        Error(code="rate_limited", message="slow down", client_msg_id="c1", retry_after_ms=250),
        Error(),
        HistoryPage(room="room-42", messages=(deliver,) * 3, has_more=True, next_after_seq=123456),
        HistoryPage(room="empty"),
        Left(room="lobby"),
        Left(room="r" * 128),
    ]
