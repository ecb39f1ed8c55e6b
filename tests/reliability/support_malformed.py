"""Malformed frames for the server: a seeded generator, the oracle, and the attack.

Three parts, used by ``test_fuzz.py``:

* :class:`MalformedInputs` makes one bad input at a time for a codec from a seeded
  ``random.Random``. Every input belongs to a named **class** (broken JSON, wrong types,
  truncated Protobuf, over-size frames, …); :data:`DOCUMENTED` lists the outcomes the
  README and PROTOCOL.md allow for each class.
* :func:`expected` is the per-input oracle: from the frame's size, type and UTF-8
  validity and from the project's own codec it says which answer the server owes —
  close 1009 (over ``max_message_bytes``), close 1007 (invalid UTF-8 in a text frame),
  ``Error{bad_frame}`` (wrong frame type, or it does not decode), ``Error{bad_request}``
  (a server-only kind), or *processed* (a valid client message: Join → Joined, Send →
  Ack or its documented refusal, Leave → Left).
* ``python -m tests.reliability.support_malformed --port P attack …`` (:func:`attack`) sends
  them: a connection or two per codec in one asyncio process, one case at a time per
  connection (send, then read until that case's answer), reconnecting after each close.
  It classifies every answer, checks it against the oracle and the class, and prints one
  JSON line of counts and violations. Its rate is paced (a schedule of case slots) so
  that it does not take the server's whole core.
* ``… bystanders …`` (:func:`bystanders`) is a room of members chatting at a steady
  rate, recording ack and delivery latency and checking that nothing is lost.

Both run in processes of their own, so the latency the bystanders measure is not the
attack's own CPU or a shared GIL, and asyncio never runs inside the pytest process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from chatcap.protocol import CODECS, DecodeError, Envelope
from chatcap.protocol import chat_pb2 as pb
from chatcap.protocol.codec import Codec
from chatcap.protocol.messages import (
    Ack,
    Deliver,
    Error,
    HistoryPage,
    Join,
    Joined,
    Leave,
    Left,
    Send,
)
from tests.support_protowire import tag, varint

# ---------------------------------------------------------------------------- outcomes

BAD_FRAME = "bad_frame"
BAD_REQUEST = "bad_request"
CLOSE_1007 = "close_1007"
CLOSE_1009 = "close_1009"
PROCESSED = "processed"  # a valid client message, answered as that message

_MUTATED = frozenset({BAD_FRAME, BAD_REQUEST, PROCESSED})

DOCUMENTED: dict[str, dict[str, frozenset[str]]] = {
    "json": {
        "broken_json": frozenset({BAD_FRAME}),
        "wrong_type": frozenset({BAD_FRAME}),
        "unknown_kind": frozenset({BAD_FRAME}),
        "huge_number": frozenset({BAD_FRAME}),
        "out_of_range": frozenset({BAD_FRAME}),
        "deep_nesting": frozenset({BAD_FRAME}),
        "lone_surrogate": frozenset({BAD_FRAME}),
        "binary_frame": frozenset({BAD_FRAME}),
        "server_kind": frozenset({BAD_REQUEST}),
        "mutated_text": _MUTATED,
        "invalid_utf8_text": frozenset({CLOSE_1007}),
        "oversize": frozenset({CLOSE_1009}),
    },
    "protobuf": {
        "truncated": _MUTATED,
        "bit_flipped": _MUTATED,
        "random_wire": _MUTATED,
        "no_kind": frozenset({BAD_FRAME}),
        "invalid_utf8_string": frozenset({BAD_FRAME}),
        "negative_int": frozenset({BAD_FRAME}),
        "out_of_range": frozenset({BAD_FRAME}),
        "deep_nesting": frozenset({BAD_FRAME}),
        "text_frame": frozenset({BAD_FRAME}),
        "server_kind": frozenset({BAD_REQUEST}),
        "invalid_utf8_text": frozenset({CLOSE_1007}),
        "oversize": frozenset({CLOSE_1009}),
    },
}
"""Input class → the answers the README's error table and close codes allow for it."""

# How often each class is drawn. Closing classes are rare: each costs a reconnect.
WEIGHTS: dict[str, dict[str, int]] = {
    "json": {
        "broken_json": 10,
        "wrong_type": 12,
        "unknown_kind": 8,
        "huge_number": 8,
        "out_of_range": 8,
        "deep_nesting": 3,
        "lone_surrogate": 6,
        "binary_frame": 8,
        "server_kind": 8,
        "mutated_text": 20,
        "invalid_utf8_text": 1,
        "oversize": 1,
    },
    "protobuf": {
        "truncated": 16,
        "bit_flipped": 22,
        "random_wire": 16,
        "no_kind": 6,
        "invalid_utf8_string": 6,
        "negative_int": 6,
        "out_of_range": 6,
        "deep_nesting": 3,
        "text_frame": 8,
        "server_kind": 8,
        "invalid_utf8_text": 1,
        "oversize": 1,
    },
}

FUZZ_ROOM = "fuzz"  # every attack connection joins it, so some mutated Sends get Acks
ROOMS = (FUZZ_ROOM, FUZZ_ROOM, "lobby", "général", "大家好", "r" * 128)
INVALID_UTF8 = (b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80")
_ODD_CHARS = '{}[]:,"\\ 0129-.eE+tfnux\x00\x7fé✓😀\u2028'
MIN_DEEP = 2_000  # JSON deeper than this never decodes (msgspec: "nested too deeply")
MIN_DEEP_PB = 101  # upb's recursion limit is 100


@dataclass(frozen=True, slots=True)
class Case:
    """One input: its class, the frame payload, and whether it goes as a text frame."""

    klass: str
    payload: bytes
    text: bool


# ---------------------------------------------------------------------------- oracle


def expected(codec: Codec, case: Case, max_frame_bytes: int) -> tuple[str, Envelope | None]:
    """The answer the server owes ``case`` and, when it decodes, the message it is."""
    if len(case.payload) > max_frame_bytes:
        return CLOSE_1009, None
    data: bytes | str = case.payload
    if case.text:
        try:
            data = case.payload.decode("utf-8")
        except UnicodeDecodeError:
            return CLOSE_1007, None
    if case.text != codec.text:
        return BAD_FRAME, None
    try:
        msg = codec.decode(data)
    except DecodeError:
        return BAD_FRAME, None
    return (PROCESSED if isinstance(msg, Join | Leave | Send) else BAD_REQUEST), msg


def send_answers(joined: bool, body_too_large: bool) -> frozenset[str]:
    """What a valid Send may get: README's error table, in the session's order of checks."""
    if not joined:
        return frozenset({"not_member", "rate_limited"})
    if body_too_large:
        return frozenset({"too_large", "rate_limited"})
    return frozenset({"ack", "rate_limited", "overloaded", "store_busy", "unavailable"})


# ---------------------------------------------------------------------------- generator


def _ld(field_number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return tag(field_number, 2) + varint(len(payload)) + payload


class MalformedInputs:
    """Seeded bad inputs for one codec; ``case()`` draws the next one."""

    def __init__(self, codec_name: str, rng: random.Random, max_frame_bytes: int) -> None:
        self.codec = CODECS[codec_name]
        self.rng = rng
        self.max_frame_bytes = max_frame_bytes
        self.max_body_bytes = max_frame_bytes - 512
        self._n = 0
        weights = WEIGHTS[codec_name]
        self._classes = list(weights)
        self._weights = list(weights.values())
        self._makers: dict[str, Callable[[], Case]] = {
            name: getattr(self, f"_{codec_name}_{name}") for name in weights
        }

    def case(self) -> Case:
        """The next input. Only the oversize class may exceed the frame limit: an input of
        another class that grew past it (a duplicated slice, escaped text) is drawn again,
        so that each class keeps its documented answer."""
        while True:
            klass = self.rng.choices(self._classes, self._weights)[0]
            case = self._makers[klass]()
            if klass == "oversize" or len(case.payload) <= self.max_frame_bytes:
                return case

    # --- valid messages to start from ------------------------------------------------

    def client_message(self, kinds: tuple[str, ...] = ("send", "join", "leave")) -> Envelope:
        rng = self.rng
        kind = rng.choices(kinds, [{"send": 6, "join": 2, "leave": 1}[k] for k in kinds])[0]
        room = rng.choice(ROOMS)
        if kind == "join":  # since_seq past the end: a replay is not what is tested here
            since = rng.choice([None, None, rng.randrange(2**40, 2**50)])
            return Join(room=room, since_seq=since)
        if kind == "leave":
            return Leave(room=room)
        self._n += 1
        body = rng.choice(
            [
                "hi",
                "",
                "大家好 🎉 capacity",
                "x" * rng.randrange(300),
                "é" * (self.max_body_bytes // 2 + rng.randrange(1, 100)),  # too_large
            ]
        )
        cid = rng.choice([f"c-{self._n}", f"c-{rng.randrange(50)}", "✓" * 64])
        return Send(client_msg_id=cid, room=room, body=body, sent_at_us=rng.randrange(2**52))

    def server_message(self) -> Envelope:
        rng = self.rng
        kinds: list[Envelope]
        deliver = Deliver(
            room="lobby",
            seq=rng.randrange(1, 10**6),
            sender="ann",
            body="hi",
            ts_us=rng.randrange(2**52),
            client_msg_id="c-1",
            sent_at_us=rng.randrange(2**52),
        )
        kinds = [
            Joined(room="lobby", last_seq=rng.randrange(10**6)),
            Ack(client_msg_id="c-1", room="lobby", seq=1, ts_us=rng.randrange(2**52)),
            deliver,
            Error(code="internal", message="x", client_msg_id="", retry_after_ms=0),
            HistoryPage(room="lobby", messages=(deliver,) * rng.randrange(3)),
        ]
        return rng.choice(kinds)

    def any_message(self) -> Envelope:
        return self.client_message() if self.rng.random() < 0.8 else self.server_message()

    def _oversize(self, text: bool) -> Case:
        extra = self.rng.choice([1, self.rng.randint(2, 4096), self.rng.randint(4096, 65536)])
        size = self.max_frame_bytes + extra
        body = "o" * size
        payload = self.codec.encode(Send(client_msg_id="big", room=FUZZ_ROOM, body=body))
        return Case("oversize", payload, text)

    def _invalid_utf8_text(self) -> Case:
        base = self.codec.encode(self.any_message())
        if not self.codec.text:  # protobuf: any bytes will do, sent as text
            base = json.dumps({"type": "join", "room": "lobby"}).encode()
        i = self.rng.randint(0, len(base))
        return Case("invalid_utf8_text", base[:i] + self.rng.choice(INVALID_UTF8) + base[i:], True)

    # --- JSON ------------------------------------------------------------------------

    def _doc(self, kinds: tuple[str, ...] = ("send", "join", "leave")) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.codec.encode(self.client_message(kinds)))
        return doc

    def _text(self, klass: str, doc: Any) -> Case:
        text = json.dumps(doc, ensure_ascii=self.rng.random() < 0.5)
        return Case(klass, text.encode("utf-8"), True)

    def _json_broken_json(self) -> Case:
        base = self.codec.encode(self.any_message())
        rng = self.rng
        op = rng.randrange(6)
        if op == 0:  # a strict prefix of an object is never a whole document
            text = base.decode()
            payload = text[: rng.randrange(len(text))].encode()  # cut between characters
        elif op == 1:
            payload = base + rng.choice([b"}", b",", b" x", b"{}", b"]", b'"'])
        elif op == 2:
            payload = rng.choice([b"x", b"]", b"}", b",", b"'"]) + base
        elif op == 3:  # a structural character swapped for a wrong one
            old, new = rng.choice([(b":", b"="), (b",", b";"), (b'"', b"'"), (b"{", b"(")])
            payload = base.replace(old, new, 1)
        elif op == 4:  # the first comma between members dropped
            payload = base.replace(b",", b" ", 1)
        else:  # an unterminated string at the end
            payload = base[:-1] + b',"unterminated'
        return Case("broken_json", payload, True)

    def _json_wrong_type(self) -> Case:
        doc = self._doc()
        name = self.rng.choice([k for k in doc if k != "type"])
        if name in ("since_seq", "sent_at_us"):
            wrong: list[Any] = ["1", 1.5, 1.0, True, [], {}, [1]]
            if name == "sent_at_us":
                wrong.append(None)  # since_seq is optional: null is a valid value there
        else:
            wrong = [1, 0, 1.5, True, False, None, [], {}, ["a"]]
        doc[name] = self.rng.choice(wrong)
        return self._text("wrong_type", doc)

    def _json_unknown_kind(self) -> Case:
        doc = self._doc()
        if self.rng.random() < 0.15:
            del doc["type"]
        else:
            kinds: list[Any] = ["", "JOIN", "Join", "shout", "deliver ", "join\x00", "sendx"]
            doc["type"] = self.rng.choice([*kinds, 1, 0, True, None, [], {}, ["join"]])
        return self._text("unknown_kind", doc)

    def _json_huge_number(self) -> Case:
        doc = self._doc(("send", "join"))
        name = "since_seq" if doc["type"] == "join" else "sent_at_us"
        literal = self.rng.choice(
            [
                str(2**63),
                str(2**64),
                str(10**30),
                str(-(2**63) - 1),
                "9" * self.rng.randint(20, 4000),
                "1e400",
                "-1e400",
                "1" + "0" * 400 + ".5",
                "9223372036854775807.0",
            ]
        )
        doc[name] = "__huge__"
        text = json.dumps(doc).replace('"__huge__"', literal)
        return Case("huge_number", text.encode(), True)

    def _json_out_of_range(self) -> Case:
        doc = self._doc()
        choices: list[tuple[str, Any]] = [("room", ""), ("room", "r" * 129), ("room", "é" * 129)]
        if doc["type"] == "send":
            choices += [("client_msg_id", ""), ("client_msg_id", "c" * 65), ("sent_at_us", -1)]
        if doc["type"] == "join":
            choices += [("since_seq", -1), ("since_seq", -(2**40))]
        name, value = self.rng.choice(choices)
        doc[name] = value
        return self._text("out_of_range", doc)

    def _json_deep_nesting(self) -> Case:
        rng = self.rng
        base = self.codec.encode(self.client_message(("join", "leave")))
        opener, closer = rng.choice([(b"[", b"]"), (b'{"k":', b"}")])
        room = self.max_frame_bytes - len(base) - 64
        depth = min(rng.randint(MIN_DEEP, 10_000), room // (len(opener) + len(closer)))
        assert depth >= MIN_DEEP, "max_frame_bytes too small for the deep-nesting class"
        deep = opener * depth + b"1" + closer * rng.choice([depth, depth // 2, 0])
        where = rng.randrange(3)
        if where == 0:  # the whole frame
            payload = deep
        elif where == 1:  # an unknown key (ignored when shallow; too deep is still refused)
            payload = base[:-1] + b',"x":' + deep + b"}"
        else:  # a known field
            payload = base[:-1] + b',"room":' + deep + b"}"
        return Case("deep_nesting", payload, True)

    def _json_lone_surrogate(self) -> Case:
        doc = self._doc()
        name = self.rng.choice([k for k in ("room", "client_msg_id", "body") if k in doc])
        doc[name] = self.rng.choice(["\ud800", "a\udfffb", "\ud83d", "x\udc00y"])
        text = json.dumps(doc, ensure_ascii=True)  # "\ud800" escapes: valid UTF-8 text
        return Case("lone_surrogate", text.encode(), True)

    def _json_binary_frame(self) -> Case:
        rng = self.rng
        payload = rng.choice(
            [
                self.codec.encode(self.client_message()),
                CODECS["protobuf"].encode(self.client_message()),
                rng.randbytes(rng.randrange(64)),
            ]
        )
        return Case("binary_frame", payload, False)

    def _json_server_kind(self) -> Case:
        return Case("server_kind", self.codec.encode(self.server_message()), True)

    def _json_mutated_text(self) -> Case:
        text = self._mutate_text(self.codec.encode(self.any_message()).decode())
        return Case("mutated_text", text.encode(), True)

    def _json_invalid_utf8_text(self) -> Case:
        return self._invalid_utf8_text()

    def _json_oversize(self) -> Case:
        return self._oversize(text=self.rng.random() < 0.8)

    def _mutate_text(self, text: str) -> str:
        """Character-level edits: the frame stays valid UTF-8 (invalid UTF-8 is its own class)."""
        rng = self.rng
        chars = list(text)
        op = rng.randrange(5)
        if op == 0:  # replace 1..4 characters
            for _ in range(rng.randint(1, 4)):
                chars[rng.randrange(len(chars))] = rng.choice(_ODD_CHARS)
        elif op == 1:  # insert a few characters
            i = rng.randint(0, len(chars))
            chars[i:i] = rng.choices(_ODD_CHARS, k=rng.randint(1, 8))
        elif op == 2:  # delete a range
            i = rng.randrange(len(chars))
            del chars[i : i + rng.randint(1, 8)]
        elif op == 3:  # duplicate a slice
            i = rng.randint(0, len(chars))
            j = rng.randint(i, len(chars))
            chars[j:j] = chars[i:j]
        else:  # swap two characters
            i, j = rng.randrange(len(chars)), rng.randrange(len(chars))
            chars[i], chars[j] = chars[j], chars[i]
        return "".join(chars)

    # --- Protobuf --------------------------------------------------------------------

    def _pb(self, klass: str, payload: bytes) -> Case:
        return Case(klass, payload, False)

    def _protobuf_truncated(self) -> Case:
        data = self.codec.encode(self.any_message())
        return self._pb("truncated", data[: self.rng.randrange(len(data))])

    def _protobuf_bit_flipped(self) -> Case:
        buf = bytearray(self.codec.encode(self.any_message()))
        for _ in range(self.rng.randint(1, 4)):
            i = self.rng.randrange(len(buf))
            buf[i] ^= 1 << self.rng.randrange(8)
        return self._pb("bit_flipped", bytes(buf))

    def _random_field(self, depth: int) -> bytes:
        rng = self.rng
        number = rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 99, 536870911])
        wire_type = rng.choice([0, 1, 2, 2, 2, 3, 4, 5, 6, 7])
        if wire_type == 0:
            if rng.random() < 0.1:  # overlong or unterminated varint
                return tag(number, 0) + b"\xff" * rng.randint(9, 12)
            return tag(number, 0) + varint(
                rng.choice([0, 1, 2**63, 2**64 - 1, rng.getrandbits(64)])
            )
        if wire_type == 1:
            return tag(number, 1) + rng.randbytes(rng.choice([8, 8, 3]))
        if wire_type == 5:
            return tag(number, 5) + rng.randbytes(rng.choice([4, 4, 1]))
        if wire_type == 2:
            if depth < 3 and rng.random() < 0.5:
                inner = b"".join(self._random_field(depth + 1) for _ in range(rng.randint(0, 4)))
            else:
                inner = rng.choice([b"", b"lobby", b"fuzz", rng.randbytes(5), *INVALID_UTF8])
            length = len(inner) + rng.choice([0, 0, 0, 0, -1, 1, 1000, 2**62])
            return tag(number, 2) + varint(max(length, 0)) + inner
        return tag(number, wire_type)  # a group start or end, or a reserved wire type

    def _protobuf_random_wire(self) -> Case:
        fields = [self._random_field(0) for _ in range(self.rng.randint(1, 4))]
        if self.rng.random() < 0.3:  # a valid envelope with junk around it
            fields.insert(self.rng.randint(0, len(fields)), self.codec.encode(self.any_message()))
        return self._pb("random_wire", b"".join(fields))

    def _protobuf_no_kind(self) -> Case:
        rng = self.rng
        payload = rng.choice(
            [
                b"",
                _ld(rng.choice([9, 15, 99]), b"lobby"),  # unknown fields only
                tag(rng.randint(1, 8), 0) + varint(5),  # a kind with a scalar wire type
                tag(rng.randint(1, 8), 5) + rng.randbytes(4),
                tag(rng.randint(1, 8), 3) + tag(rng.randint(1, 8), 4),  # an empty group
            ]
        )
        return self._pb("no_kind", payload)

    def _protobuf_invalid_utf8_string(self) -> Case:
        bad = b"ok" + self.rng.choice(INVALID_UTF8)
        payload = self.rng.choice(
            [
                _ld(1, _ld(1, bad)),  # join.room
                _ld(3, _ld(1, bad)),  # leave.room
                _ld(4, _ld(1, b"c-1") + _ld(2, bad)),  # send.room
                _ld(4, _ld(1, bad) + _ld(2, b"fuzz")),  # send.client_msg_id
                _ld(4, _ld(1, b"c-1") + _ld(2, b"fuzz") + _ld(3, bad)),  # send.body
            ]
        )
        return self._pb("invalid_utf8_string", payload)

    def _protobuf_negative_int(self) -> Case:
        value = -self.rng.choice([1, 2, 2**31, 2**62, 2**63])
        if self.rng.random() < 0.5:
            env = pb.Envelope(join=pb.Join(room="fuzz", since_seq=value))
        else:
            env = pb.Envelope(
                send=pb.Send(client_msg_id="c-1", room="fuzz", body="x", sent_at_us=value)
            )
        return self._pb("negative_int", env.SerializeToString())

    def _protobuf_out_of_range(self) -> Case:
        rng = self.rng
        long_room = rng.choice(["r" * 129, "é" * 129])
        env = rng.choice(
            [
                pb.Envelope(join=pb.Join(room="")),
                pb.Envelope(join=pb.Join(room=long_room)),
                pb.Envelope(leave=pb.Leave(room="")),
                pb.Envelope(send=pb.Send(client_msg_id="", room="fuzz", body="x")),
                pb.Envelope(send=pb.Send(client_msg_id="c" * 65, room="fuzz", body="x")),
                pb.Envelope(send=pb.Send(client_msg_id="c-1", room=long_room, body="x")),
            ]
        )
        return self._pb("out_of_range", env.SerializeToString())

    def _protobuf_deep_nesting(self) -> Case:
        rng = self.rng
        start, end = tag(99, 3), tag(99, 4)
        depth = min(rng.randint(MIN_DEEP_PB, 5_000), (self.max_frame_bytes - 64) // 4)
        nested = start * depth + end * rng.choice([depth, depth // 2, 0])
        if rng.random() < 0.5:  # after a valid envelope: the whole frame is still refused
            nested = self.codec.encode(self.client_message()) + nested
        return self._pb("deep_nesting", nested)

    def _protobuf_text_frame(self) -> Case:
        rng = self.rng
        text = rng.choice(
            [
                CODECS["json"].encode(self.client_message()).decode(),
                "hello",
                "",
                "大家好 🎉",
                base64.b64encode(self.codec.encode(self.client_message())).decode(),
            ]
        )
        return Case("text_frame", text.encode(), True)

    def _protobuf_server_kind(self) -> Case:
        return self._pb("server_kind", self.codec.encode(self.server_message()))

    def _protobuf_invalid_utf8_text(self) -> Case:
        return self._invalid_utf8_text()

    def _protobuf_oversize(self) -> Case:
        return self._oversize(text=self.rng.random() < 0.2)


# ---------------------------------------------------------------------------- the attack


@dataclass
class Tally:
    """What the attack saw, per codec: counts by class and outcome, and every violation."""

    counts: dict[str, dict[str, Counter[str]]] = field(default_factory=dict)
    details: dict[str, Counter[str]] = field(default_factory=dict)
    violations: list[dict[str, Any]] = field(default_factory=list)
    violation_count: int = 0
    reconnects: int = 0

    def add(self, codec: str, klass: str, outcome: str, detail: str) -> None:
        self.counts.setdefault(codec, {}).setdefault(klass, Counter())[outcome] += 1
        if outcome == PROCESSED:
            self.details.setdefault(codec, Counter())[detail] += 1

    def violation(self, codec: str, case: Case, want: str, got: str, detail: str) -> None:
        self.violation_count += 1
        if len(self.violations) < 20:
            self.violations.append(
                {
                    "codec": codec,
                    "class": case.klass,
                    "expected": want,
                    "observed": got,
                    "detail": detail,
                    "text": case.text,
                    "bytes": len(case.payload),
                    "payload": repr(case.payload[:240]),
                }
            )


class Pacer:
    """Hands out case slots at ``rate_per_s`` across all connections (no catch-up burst)."""

    def __init__(self, rate_per_s: float) -> None:
        self.interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self.next_at = 0.0

    async def slot(self) -> None:
        if not self.interval:
            return
        now = asyncio.get_running_loop().time()
        self.next_at = max(self.next_at, now - 0.05)
        delay = self.next_at - now
        self.next_at += self.interval
        if delay > 0:
            await asyncio.sleep(delay)  # the attack's schedule, not a wait for a state


@dataclass
class Answer:
    """The first frame (Delivers skipped) after a case, or how the connection ended."""

    outcome: str  # BAD_FRAME, BAD_REQUEST, PROCESSED, close_NNNN, timeout, unexpected
    detail: str = ""
    msg: Envelope | None = None


class Attacker:
    """One connection: plays cases one at a time and checks each answer."""

    def __init__(
        self, args: argparse.Namespace, codec_name: str, token: str, worker: int, tally: Tally
    ) -> None:
        self.args = args
        self.codec_name = codec_name
        self.codec = CODECS[codec_name]
        self.token = token
        self.tally = tally
        self.inputs = MalformedInputs(
            codec_name, random.Random(f"{args.seed}:{codec_name}:{worker}"), args.max_frame_bytes
        )
        self.ws: ClientConnection | None = None
        self.joined: set[str] = set()

    async def connect(self) -> None:
        url = f"ws://127.0.0.1:{self.args.port}/api/v1/ws"
        self.ws = await connect(
            url,
            subprotocols=[self.codec.subprotocol],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {self.token}"},
            compression=None,
            open_timeout=self.args.timeout_s,
            ping_interval=None,
        )
        await self.ws.send(self.codec.encode(Join(room=FUZZ_ROOM)), text=self.codec.text)
        answer = await self.answer()
        if not (isinstance(answer.msg, Joined) and answer.msg.room == FUZZ_ROOM):
            raise RuntimeError(f"could not join {FUZZ_ROOM}: {answer}")
        self.joined = {FUZZ_ROOM}

    async def reconnect(self) -> None:
        self.tally.reconnects += 1
        if self.ws is not None:
            try:
                async with asyncio.timeout(self.args.timeout_s):
                    await self.ws.close()
            except TimeoutError:
                pass
        await self.connect()

    async def answer(self) -> Answer:
        """The next non-Deliver frame, classified; a close or a timeout says so."""
        assert self.ws is not None
        try:
            async with asyncio.timeout(self.args.timeout_s):
                while True:
                    frame = await self.ws.recv()
                    if isinstance(frame, str) != self.codec.text:
                        return Answer("unexpected", "frame of the wrong type from the server")
                    try:
                        msg = self.codec.decode(frame)
                    except DecodeError as exc:
                        return Answer("unexpected", f"undecodable answer: {exc.reason}")
                    if not isinstance(msg, Deliver):
                        return classify(msg)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else "none"
            return Answer(f"close_{code}")
        except TimeoutError:
            return Answer("timeout")

    async def send(self, payload: bytes, text: bool) -> Answer | None:
        assert self.ws is not None
        try:
            await self.ws.send(payload, text=text)
        except ConnectionClosed:
            return await self.answer()  # the close that came first
        return None

    async def play(self, case: Case) -> None:
        want, msg = expected(self.codec, case, self.args.max_frame_bytes)
        got = await self.send(case.payload, case.text)
        if got is None:
            got = await self.answer()
        ok = got.outcome == want and (want != PROCESSED or self.check_processed(msg, got))
        ok = ok and got.outcome in DOCUMENTED[self.codec_name][case.klass]
        self.tally.add(self.codec_name, case.klass, got.outcome, got.detail)
        if not ok:
            self.tally.violation(self.codec_name, case, want, got.outcome, got.detail)
        if not ok or got.outcome.startswith("close_"):
            await self.reconnect()  # after a close, or to resynchronise after a surprise

    def check_processed(self, msg: Envelope | None, got: Answer) -> bool:
        """A valid client message got the answer its kind and this connection's state allow."""
        m = got.msg
        if isinstance(msg, Join):
            if isinstance(m, Joined) and m.room == msg.room:
                self.joined.add(msg.room)
                return True
            return isinstance(m, Error) and m.code == "unavailable"
        if isinstance(msg, Leave):
            self.joined.discard(msg.room)
            return isinstance(m, Left) and m.room == msg.room
        if isinstance(msg, Send):
            too_large = len(msg.body.encode()) > self.args.max_frame_bytes - 512
            allowed = send_answers(msg.room in self.joined, too_large)
            if isinstance(m, Ack):
                return m.client_msg_id == msg.client_msg_id and "ack" in allowed
            return (
                isinstance(m, Error) and m.client_msg_id == msg.client_msg_id and m.code in allowed
            )
        return False

    async def run(self, cases: int, pacer: Pacer) -> None:
        for _ in range(cases):
            await pacer.slot()
            await self.play(self.inputs.case())
        assert self.ws is not None
        await self.ws.close()


def classify(msg: Envelope) -> Answer:
    if isinstance(msg, Error):
        if msg.code in (BAD_FRAME, BAD_REQUEST):
            return Answer(msg.code, "", msg)
        return Answer(PROCESSED, msg.code, msg)
    if isinstance(msg, Joined):
        return Answer(PROCESSED, "joined", msg)
    if isinstance(msg, Ack):
        return Answer(PROCESSED, "ack", msg)
    if isinstance(msg, Left):
        return Answer(PROCESSED, "left", msg)
    return Answer("unexpected", type(msg).__name__, msg)


def fetch_token(port: int, user: str, timeout_s: float) -> str:
    basic = base64.b64encode(f"{user}:pw".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/token", headers={"Authorization": f"Basic {basic}"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as resp:
        return str(json.loads(resp.read())["token"])


async def attack(args: argparse.Namespace) -> dict[str, Any]:
    tally = Tally()
    pacer = Pacer(args.rate)
    workers: list[tuple[Attacker, int]] = []
    for codec_name in args.codecs.split(","):
        for w in range(args.connections):
            share = args.count // args.connections + (w < args.count % args.connections)
            token = fetch_token(args.port, f"fuzz-{codec_name}-{w}", args.timeout_s)
            workers.append((Attacker(args, codec_name, token, w, tally), share))
    for attacker, _ in workers:
        await attacker.connect()
    started_at = time.time()
    print(json.dumps({"started_at": started_at}), flush=True)
    async with asyncio.timeout(args.deadline_s):
        await asyncio.gather(*(a.run(n, pacer) for a, n in workers))
    return {
        "started_at": started_at,
        "ended_at": time.time(),
        "counts": {c: {k: dict(v) for k, v in by.items()} for c, by in tally.counts.items()},
        "details": {c: dict(v) for c, v in tally.details.items()},
        "violations": tally.violations,
        "violation_count": tally.violation_count,
        "reconnects": tally.reconnects,
    }


# ---------------------------------------------------------------------------- bystanders


class Member:
    """One bystander: sends to the room on a fixed schedule and records what comes back."""

    def __init__(self, args: argparse.Namespace, user: str, codec_name: str, token: str) -> None:
        self.args = args
        self.user = user
        self.codec = CODECS[codec_name]
        self.token = token
        self.ws: ClientConnection | None = None
        self.sent = 0
        self.pending: dict[str, float] = {}  # client_msg_id -> perf_counter at send
        self.acked: set[str] = set()
        self.received: Counter[str] = Counter()  # others' client_msg_ids
        self.seqs: list[int] = []
        self.errors: list[str] = []
        self.ack_samples: list[tuple[float, float]] = []  # (wall time sent, seconds)
        self.deliver_samples: list[tuple[float, float]] = []

    async def connect(self) -> None:
        self.ws = await connect(
            f"ws://127.0.0.1:{self.args.port}/api/v1/ws",
            subprotocols=[self.codec.subprotocol],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {self.token}"},
            compression=None,
            open_timeout=self.args.timeout_s,
        )
        await self.ws.send(self.codec.encode(Join(room=self.args.room)), text=self.codec.text)
        async with asyncio.timeout(self.args.timeout_s):
            joined = self.codec.decode(await self.ws.recv())
        if not isinstance(joined, Joined):
            raise RuntimeError(f"{self.user}: Join answered {joined}")

    async def send_on_schedule(self, stop: asyncio.Event) -> None:
        assert self.ws is not None
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            self.sent += 1
            cid = f"{self.user}-{self.sent}"
            self.pending[cid] = time.perf_counter()
            msg = Send(
                client_msg_id=cid,
                room=self.args.room,
                body="b" * 100,
                sent_at_us=time.time_ns() // 1000,
            )
            await self.ws.send(self.codec.encode(msg), text=self.codec.text)
            next_at = max(next_at + self.args.interval_s, loop.time() - self.args.interval_s)
            try:  # the send schedule: the next slot, or the stop signal
                async with asyncio.timeout_at(next_at):
                    await stop.wait()
            except TimeoutError:
                pass

    async def receive(self, progress: asyncio.Event) -> None:
        assert self.ws is not None
        try:
            async for frame in self.ws:
                self.handle(self.codec.decode(frame))
                progress.set()
        except ConnectionClosed:
            pass

    def handle(self, msg: Envelope) -> None:
        now_perf, now_wall = time.perf_counter(), time.time()
        if isinstance(msg, Ack):
            seconds = now_perf - self.pending.pop(msg.client_msg_id)
            self.ack_samples.append((now_wall - seconds, seconds))
            self.acked.add(msg.client_msg_id)
        elif isinstance(msg, Deliver):
            sent_wall = msg.sent_at_us / 1e6
            self.deliver_samples.append((sent_wall, now_wall - sent_wall))
            self.received[msg.client_msg_id] += 1
            self.seqs.append(msg.seq)
        elif isinstance(msg, Error):
            self.errors.append(f"{msg.code}: {msg.message}")
        else:
            self.errors.append(f"unexpected {type(msg).__name__}")


async def wait_for(progress: asyncio.Event, ready: Callable[[], bool], timeout_s: float) -> None:
    """Wait until ``ready()``, re-checking whenever a frame arrived."""
    async with asyncio.timeout(timeout_s):
        while not ready():
            progress.clear()
            await progress.wait()


async def bystanders(args: argparse.Namespace) -> dict[str, Any]:
    """A room of members sending at a steady rate; lines on stdout mark the phases.

    ``{"warm_at": t}`` after ``--warmup-acks`` acks, ``{"baseline_done": t}`` after
    ``--baseline-acks`` more; then a line on stdin stops the sending, every send is
    waited for (its Ack, and its Deliver at every other member) and the result follows.
    """
    members = []
    for spec in args.members.split(","):
        user, codec_name = spec.split(":")
        members.append(Member(args, user, codec_name, fetch_token(args.port, user, args.timeout_s)))
    for m in members:
        await m.connect()
    stop, progress = asyncio.Event(), asyncio.Event()
    receivers = [asyncio.create_task(m.receive(progress)) for m in members]
    senders = [asyncio.create_task(m.send_on_schedule(stop)) for m in members]

    def acks() -> int:
        return sum(len(m.acked) for m in members)

    await wait_for(progress, lambda: acks() >= args.warmup_acks, args.timeout_s)
    print(json.dumps({"warm_at": time.time()}), flush=True)
    target = args.warmup_acks + args.baseline_acks
    await wait_for(progress, lambda: acks() >= target, args.timeout_s + target)
    print(json.dumps({"baseline_done": time.time()}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the test says: stop sending
    stop.set()
    await asyncio.gather(*senders)
    await wait_for(progress, lambda: not any(m.pending for m in members), args.timeout_s)
    everyone = set().union(*(m.acked for m in members))
    await wait_for(
        progress,
        lambda: all(set(m.received) >= everyone - m.acked for m in members),
        args.timeout_s,
    )
    for m in members:
        assert m.ws is not None
        await m.ws.close()
    await asyncio.gather(*receivers)
    return {
        "members": [
            {
                "user": m.user,
                "sent": m.sent,
                "acked": len(m.acked),
                "errors": m.errors[:10],
                "lost": len(everyone - m.acked - set(m.received)),
                "duplicated": sum(n - 1 for n in m.received.values()),
                "in_order": m.seqs == sorted(m.seqs),
            }
            for m in members
        ],
        "ack_samples": [s for m in members for s in m.ack_samples],
        "deliver_samples": [s for m in members for s in m.deliver_samples],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.reliability.support_malformed")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--timeout-s", type=float, default=10.0, help="wait for one answer")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("attack", help="send malformed frames and check every answer")
    a.add_argument("--codecs", default="json,protobuf")
    a.add_argument("--count", type=int, required=True, help="cases per codec")
    a.add_argument("--connections", type=int, default=2, help="connections per codec")
    a.add_argument("--seed", required=True)
    a.add_argument("--rate", type=float, default=0.0, help="cases per second in all; 0 = unpaced")
    a.add_argument("--max-frame-bytes", type=int, required=True)
    a.add_argument("--deadline-s", type=float, default=600.0, help="the whole attack")
    a.add_argument("--nice", type=int, default=0, help="lower this process's priority")
    b = sub.add_parser("bystanders", help="a room chatting at a steady rate")
    b.add_argument("--members", required=True, help="user:codec,user:codec,…")
    b.add_argument("--room", default="bystanders")
    b.add_argument("--interval-s", type=float, required=True, help="between sends, per member")
    b.add_argument("--warmup-acks", type=int, required=True)
    b.add_argument("--baseline-acks", type=int, required=True)
    args = p.parse_args(argv)
    if getattr(args, "nice", 0):
        os.nice(args.nice)  # a load generator on the server's machine: let the server go first
    run = attack if args.command == "attack" else bystanders
    print(json.dumps(asyncio.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
