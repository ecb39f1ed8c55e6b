"""The in-memory model of the chat.v1 protocol: one frozen msgspec Struct per envelope kind.

The Structs mirror ``chat.proto`` field for field, in the same order and with the same
names. The server, the SimPy model and the load generator all speak these types; the
codecs (``json_codec``, ``protobuf_codec``) turn them into frames and back.

Limits live in the type annotations (``msgspec.Meta``) under the names below, so the
JSON decoder enforces them for free; the Protobuf decoder checks the same constants
(``ROOM_MAX_CHARS``, ``CLIENT_MSG_ID_MAX_CHARS``; ints never negative). Constructing a
Struct in code does *not* validate it: values the server makes itself are trusted;
values from the network only arrive through a codec.

A string with a lower bound of 1 (``Room``, ``ClientMsgId``) has no default: proto3
cannot tell an absent string from ``""``, and ``""`` is invalid, so both codecs reject
a frame that lacks it.
"""

from typing import Annotated, Final, TypeAlias

import msgspec

__all__ = [
    "BAD_FRAME",
    "BAD_REQUEST",
    "CLIENT_KINDS",
    "CLIENT_MSG_ID_MAX_CHARS",
    "ERROR_CODES",
    "INT64_MAX",
    "INTERNAL",
    "KINDS",
    "NOT_MEMBER",
    "OVERLOADED",
    "RATE_LIMITED",
    "ROOM_MAX_CHARS",
    "STORE_BUSY",
    "TOO_LARGE",
    "UINT32_MAX",
    "UNAUTHORIZED",
    "UNAVAILABLE",
    "Ack",
    "ClientMsgId",
    "Deliver",
    "Envelope",
    "Error",
    "HistoryPage",
    "Join",
    "Joined",
    "Leave",
    "Left",
    "MaybeClientMsgId",
    "RetryAfterMs",
    "Room",
    "Send",
    "Seq",
    "TsUs",
]

# --- limits -----------------------------------------------------------------------

ROOM_MAX_CHARS: Final = 128
CLIENT_MSG_ID_MAX_CHARS: Final = 64
INT64_MAX: Final = 2**63 - 1
UINT32_MAX: Final = 2**32 - 1

Room: TypeAlias = Annotated[str, msgspec.Meta(min_length=1, max_length=ROOM_MAX_CHARS)]
"""A room name, 1..128 characters."""
ClientMsgId: TypeAlias = Annotated[
    str, msgspec.Meta(min_length=1, max_length=CLIENT_MSG_ID_MAX_CHARS)
]
"""The client's id of a Send, 1..64 characters."""
MaybeClientMsgId: TypeAlias = Annotated[str, msgspec.Meta(max_length=CLIENT_MSG_ID_MAX_CHARS)]
"""A client_msg_id that may be empty (Deliver, Error): 0..64 characters."""
Seq: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
"""A per-room sequence number, 0..2**63-1."""
TsUs: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
"""A timestamp in microseconds since the Unix epoch, 0..2**63-1."""
RetryAfterMs: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=UINT32_MAX)]
"""A delay in milliseconds, 0..2**32-1 (proto uint32)."""

# --- error codes ------------------------------------------------------------------

BAD_FRAME: Final = "bad_frame"
BAD_REQUEST: Final = "bad_request"
UNAUTHORIZED: Final = "unauthorized"
NOT_MEMBER: Final = "not_member"
RATE_LIMITED: Final = "rate_limited"
OVERLOADED: Final = "overloaded"
STORE_BUSY: Final = "store_busy"
UNAVAILABLE: Final = "unavailable"
INTERNAL: Final = "internal"
TOO_LARGE: Final = "too_large"

ERROR_CODES: Final = frozenset(
    {
        BAD_FRAME,
        BAD_REQUEST,
        UNAUTHORIZED,
        NOT_MEMBER,
        RATE_LIMITED,
        OVERLOADED,
        STORE_BUSY,
        UNAVAILABLE,
        INTERNAL,
        TOO_LARGE,
    }
)
"""The values of ``Error.code``.

=============  ============================================================  ====================
code           meaning                                                       client should
=============  ============================================================  ====================
bad_frame      the frame did not decode (``DecodeError``), or a text frame   fix the client
               on the protobuf subprotocol / binary on the JSON one
bad_request    decoded, but a kind only the server sends (see CLIENT_KINDS)  fix the client
unauthorized   missing, expired or invalid token                             get a new token
not_member     a Send to a room this connection has not joined               Join first
rate_limited   the sender's rate limit is spent                              wait retry_after_ms
overloaded     the server's write queue is full (peak shaving)               wait retry_after_ms
store_busy     no store connection within the pool's acquire timeout         back off, retry
unavailable    the store's circuit breaker is open, or the server drains     wait retry_after_ms
internal       a bug or an unexpected store failure                          back off, retry
too_large      the frame exceeds the server's max frame bytes                shorten the body
=============  ============================================================  ====================

Clients must treat an unknown code like ``internal`` (new codes may be added).
"""


# --- envelope kinds ---------------------------------------------------------------


class _Message(msgspec.Struct, frozen=True, kw_only=True, gc=False, tag_field="type"):
    """Base of every envelope kind: immutable, keyword-only, tagged by ``"type"``."""


class Join(_Message, frozen=True, kw_only=True, tag="join"):
    """Subscribe to ``room``; ``since_seq`` set = first replay messages with seq > it."""

    room: Room
    since_seq: Seq | None = None


class Joined(_Message, frozen=True, kw_only=True, tag="joined"):
    """The server accepted a Join; ``last_seq`` is the room's highest seq at that moment."""

    room: Room
    last_seq: Seq = 0


class Leave(_Message, frozen=True, kw_only=True, tag="leave"):
    """Unsubscribe from ``room``; answered by ``Left`` (also when it was not joined)."""

    room: Room


class Left(_Message, frozen=True, kw_only=True, tag="left"):
    """The server carried out a Leave of ``room`` (sent even if it was not joined)."""

    room: Room


class Send(_Message, frozen=True, kw_only=True, tag="send"):
    """Post ``body`` to ``room``; a retry reuses ``client_msg_id`` (idempotent)."""

    client_msg_id: ClientMsgId
    room: Room
    body: str = ""
    sent_at_us: TsUs = 0


class Ack(_Message, frozen=True, kw_only=True, tag="ack"):
    """The Send ``client_msg_id`` is durable as ``seq`` in ``room``, committed at ``ts_us``."""

    client_msg_id: ClientMsgId
    room: Room
    seq: Seq = 0
    ts_us: TsUs = 0


class Deliver(_Message, frozen=True, kw_only=True, tag="deliver"):
    """A committed message pushed to a room member (or replayed in a HistoryPage)."""

    room: Room
    seq: Seq = 0
    sender: str = ""
    body: str = ""
    ts_us: TsUs = 0
    client_msg_id: MaybeClientMsgId = ""
    sent_at_us: TsUs = 0


class Error(_Message, frozen=True, kw_only=True, tag="error"):
    """A request failed; ``code`` is one of ``ERROR_CODES`` (or a newer one)."""

    code: str = ""
    message: str = ""
    client_msg_id: MaybeClientMsgId = ""
    retry_after_ms: RetryAfterMs = 0


class HistoryPage(_Message, frozen=True, kw_only=True, tag="history"):
    """Stored messages of ``room`` in ascending seq; continue after ``next_after_seq``."""

    room: Room
    messages: tuple[Deliver, ...] = ()
    has_more: bool = False
    next_after_seq: Seq = 0


Envelope: TypeAlias = Join | Joined | Leave | Send | Ack | Deliver | Error | HistoryPage | Left
"""Any one frame of the protocol."""

#: Envelope kinds by their tag (the JSON "type" and the proto oneof case name).
KINDS: Final[dict[str, type[Envelope]]] = {
    "join": Join,
    "joined": Joined,
    "leave": Leave,
    "send": Send,
    "ack": Ack,
    "deliver": Deliver,
    "error": Error,
    "history": HistoryPage,
    "left": Left,
}

#: The kinds a client may send (C→S), in schema order; every other kind is sent by the
#: server, and a client that sends one gets ``bad_request``.
CLIENT_KINDS: Final[tuple[str, ...]] = ("join", "leave", "send")
