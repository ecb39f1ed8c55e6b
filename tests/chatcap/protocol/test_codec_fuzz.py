"""Fuzzing: whatever arrives, ``decode`` returns a valid envelope or raises ``DecodeError``.

A seeded ``random.Random`` loop, not Hypothesis, so that 100,000 inputs per codec run in
seconds. Inputs start from valid frames and get mutated: bit flips, truncation, splices,
random bytes, and for JSON structural edits (wrong types, huge numbers, 10,000 levels of
nesting, unknown kinds, invalid UTF-8, lone surrogates); for Protobuf hand-built wire
data (unknown fields, wrong wire types, overlong varints, lying lengths, deep nesting).
Anything decoded must survive a round trip through both codecs: that is what proves it
satisfies the model's limits (a lone surrogate would make the Protobuf encoder raise).
"""

import copy
import json
import random
from collections.abc import Callable
from typing import Any

import pytest
from support_strategies import sample_envelopes

from chatcap.protocol.codec import CODECS, Codec, DecodeError
from chatcap.protocol.errors import echoable_client_msg_id
from chatcap.protocol.messages import KINDS, Envelope
from tests.support_protowire import tag, varint

JSON = CODECS["json"]
PROTOBUF = CODECS["protobuf"]
SEED = 20240611
DEFAULT_RUNS = 5_000
SLOW_RUNS = 100_000

_SAMPLES = sample_envelopes()
_JSON_CORPUS = [JSON.encode(m) for m in _SAMPLES]
_PB_CORPUS = [PROTOBUF.encode(m) for m in _SAMPLES]
_DEEP = 10_000

_WEIRD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**31,
    2**32,
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    10**30,
    -(10**30),
    1.5,
    1e308,
    -0.0,
    "",
    "x" * 200,
    "\ud800",
    "a\udfffb",
    "😀",
    "\x00",
    [],
    {},
    [1, "2", None],
    {"type": "deliver", "room": "r"},
    {"room": 5},
]
_WEIRD_KINDS: list[Any] = ["", "JOIN", "shout", "deliver ", None, 1, [], {}, *KINDS]
_INVALID_UTF8 = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80"]


# --- byte-level mutations (both formats) ----------------------------------------------


def _mutate_bytes(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    buf = bytearray(data)
    op = rng.randrange(8)
    if op == 0 and buf:  # flip 1..4 bits
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif op == 1 and buf:  # overwrite a byte
        buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif op == 2:  # truncate
        del buf[rng.randint(0, len(buf)) :]
    elif op == 3:  # insert random bytes
        i = rng.randint(0, len(buf))
        buf[i:i] = rng.randbytes(rng.randint(1, 8))
    elif op == 4 and buf:  # delete a range
        i = rng.randrange(len(buf))
        del buf[i : i + rng.randint(1, 8)]
    elif op == 5:  # splice with another frame
        other = rng.choice(corpus)
        buf = buf[: rng.randint(0, len(buf))] + other[rng.randint(0, len(other)) :]
    elif op == 6:  # duplicate a slice
        i = rng.randint(0, len(buf))
        j = rng.randint(i, len(buf))
        buf[j:j] = buf[i:j]
    else:  # pure noise
        buf = bytearray(rng.randbytes(rng.randint(0, 64)))
    return bytes(buf)


# --- JSON structural mutations --------------------------------------------------------


def _weird(rng: random.Random) -> Any:
    if rng.random() < 0.01:
        return _nested(rng, 100)
    return copy.deepcopy(rng.choice(_WEIRD_VALUES))  # later mutations must not alias it


def _nested(rng: random.Random, depth: int) -> Any:
    value: Any = rng.choice([[], {}, 1, "x"])
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def _mutate_json_doc(rng: random.Random, doc: dict[str, Any]) -> Any:
    entries = doc.get("messages")
    page_entries = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    target = rng.choice([doc, *page_entries])
    op = rng.randrange(6)
    keys = list(target)
    if op == 0 and keys:  # a wrong-typed or out-of-range value
        target[rng.choice(keys)] = _weird(rng)
    elif op == 1 and keys:  # a missing key
        del target[rng.choice(keys)]
    elif op == 2:  # an unknown key
        target[rng.choice(["extra", "type2", "", "messages"])] = _weird(rng)
    elif op == 3:  # an unknown or ill-typed kind
        target["type"] = rng.choice(_WEIRD_KINDS)
    elif op == 4:  # not an object at all
        return _weird(rng)
    else:  # one level deeper than it should be
        return rng.choice([[doc], {"envelope": doc}, _nested(rng, rng.choice([2, 100]))])
    return doc


def _deep_json(rng: random.Random, base: bytes) -> bytes:
    """10,000 levels of arrays or objects: the whole frame, or the value of a field."""
    opener, closer = rng.choice([(b"[", b"]"), (b'{"k":', b"}"), (b'[{"a":', b"}]")])
    deep = opener * _DEEP + b"1" + closer * rng.choice([_DEEP, _DEEP // 2, 0])
    if rng.random() < 0.5:
        return deep
    return base[:-1] + b',"x":' + deep + b"}"


def _json_input(rng: random.Random) -> bytes | str:
    base = rng.choice(_JSON_CORPUS)
    roll = rng.random()
    if roll < 0.02:
        return _deep_json(rng, base)
    if roll < 0.35:
        return _mutate_bytes(rng, base, _JSON_CORPUS)
    if roll < 0.40:  # binary on the JSON subprotocol
        return rng.choice(_PB_CORPUS)
    if roll < 0.45:  # invalid UTF-8 inside the document
        i = rng.randint(0, len(base))
        return base[:i] + rng.choice(_INVALID_UTF8) + base[i:]
    doc = _mutate_json_doc(rng, json.loads(base))
    for _ in range(rng.choice([0, 0, 1, 2])):
        if isinstance(doc, dict):
            doc = _mutate_json_doc(rng, doc)
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5)  # True: "\ud800" escapes
    if rng.random() < 0.5:
        return text  # a text frame, possibly holding a lone surrogate
    return text.encode("utf-8", "surrogatepass")  # lone surrogates -> invalid UTF-8


# --- Protobuf wire construction --------------------------------------------------------


def _random_field(rng: random.Random, depth: int) -> bytes:
    field = rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 99, 536870911, 0])
    wire_type = rng.choice([0, 1, 2, 2, 2, 3, 4, 5, 6, 7])
    if wire_type == 0:
        value = rng.choice([0, 1, -1, 2**63, 2**64 - 1, rng.getrandbits(64)])
        body = varint(value)
        if rng.random() < 0.1:  # overlong / unterminated varint
            body = b"\xff" * rng.randint(9, 12) + rng.choice([b"", b"\x01", b"\x7f"])
        return tag(field, 0) + body
    if wire_type == 1:
        return tag(field, 1) + rng.randbytes(rng.choice([8, 8, 3]))
    if wire_type == 5:
        return tag(field, 5) + rng.randbytes(rng.choice([4, 4, 1]))
    if wire_type == 2:
        if depth < 4 and rng.random() < 0.5:
            payload = b"".join(_random_field(rng, depth + 1) for _ in range(rng.randint(0, 4)))
        else:
            payload = rng.choice(
                [b"", b"lobby", "大家好 🎉".encode(), rng.randbytes(5), *_INVALID_UTF8]
            )
        length = len(payload) + rng.choice([0, 0, 0, 0, -1, 1, 1000, 2**62])
        return tag(field, 2) + varint(max(length, 0)) + payload
    return tag(field, wire_type)  # group start/end, reserved wire types


def _deep_protobuf(rng: random.Random, depth: int) -> bytes:
    if rng.random() < 0.5:  # nested length-delimited messages: history -> messages -> ...
        prefixes = []
        length = 0
        for _ in range(depth):  # from the innermost out; join once (no quadratic copying)
            prefix = tag(rng.choice([2, 8]), 2) + varint(length)
            prefixes.append(prefix)
            length += len(prefix)
        return b"".join(reversed(prefixes))
    return tag(8, 3) * depth + tag(8, 4) * depth  # nested groups


# Built once: a 10,000-level frame costs milliseconds to build, microseconds to reject.
_DEEP_PB_CORPUS = [
    _deep_protobuf(random.Random(i), depth) for i, depth in enumerate([50, 101, 200, _DEEP] * 2)
]


def _protobuf_input(rng: random.Random) -> bytes | str:
    roll = rng.random()
    if roll < 0.5:
        return _mutate_bytes(rng, rng.choice(_PB_CORPUS), _PB_CORPUS)
    if roll < 0.8:
        fields = [_random_field(rng, 0) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.5:  # a valid frame with junk around it
            fields.insert(rng.randint(0, len(fields)), rng.choice(_PB_CORPUS))
        return b"".join(fields)
    if roll < 0.85:
        deep = rng.choice(_DEEP_PB_CORPUS)
        return deep if rng.random() < 0.5 else _mutate_bytes(rng, deep, _PB_CORPUS)
    if roll < 0.9:  # a text frame on the binary subprotocol
        return rng.choice(_JSON_CORPUS).decode("utf-8")
    if roll < 0.95:
        return rng.choice(_JSON_CORPUS)
    kind = rng.randint(1, len(KINDS))  # a known oneof case holding random fields
    payload = b"".join(_random_field(rng, 1) for _ in range(rng.randint(0, 5)))
    return tag(kind, 2) + varint(len(payload)) + payload


# --- the loop ----------------------------------------------------------------------------


def _check_accepted(msg: Envelope) -> None:
    assert type(msg) in KINDS.values()
    for codec in CODECS.values():
        assert codec.decode(codec.encode(msg)) == msg


def _fuzz(
    codec: Codec, make_input: Callable[[random.Random], bytes | str], runs: int
) -> dict[str, int]:
    rng = random.Random(f"{SEED}-{codec.name}")
    counts = {"accepted": 0, "rejected": 0, "named": 0}
    for i in range(runs):
        data = make_input(rng)
        try:
            msg = codec.decode(data)
        except DecodeError as exc:
            assert isinstance(exc.reason, str)
            assert exc.reason
            # the id read leniently is a valid one or "": an Error can always carry it
            assert echoable_client_msg_id(exc.client_msg_id) == exc.client_msg_id
            counts["rejected"] += 1
            counts["named"] += bool(exc.client_msg_id)
            continue
        except Exception as exc:
            pytest.fail(f"run {i}: {type(exc).__name__}: {exc} for input {data[:200]!r}")
        _check_accepted(msg)
        counts["accepted"] += 1
    return counts


_MAKERS = {"json": _json_input, "protobuf": _protobuf_input}


@pytest.mark.parametrize("name", sorted(_MAKERS))
def test_random_and_mutated_frames_raise_only_decode_error(name: str) -> None:
    counts = _fuzz(CODECS[name], _MAKERS[name], DEFAULT_RUNS)
    # Both outcomes must be exercised, or the mutators are not doing their job.
    assert counts["accepted"] > DEFAULT_RUNS // 50
    assert counts["rejected"] > DEFAULT_RUNS // 2
    assert counts["named"] > DEFAULT_RUNS // 500  # broken Sends that still name their id


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_MAKERS))
def test_a_hundred_thousand_mutated_frames_raise_only_decode_error(name: str) -> None:
    counts = _fuzz(CODECS[name], _MAKERS[name], SLOW_RUNS)
    assert counts["accepted"] + counts["rejected"] == SLOW_RUNS
