"""Codec micro-benchmark: bytes and ns per encode/decode, ours beside the bare libraries.

``python -m bench codecs [--out DIR] [--quick] [--repeat N]``

Three envelopes — a small ``Ack``, a chat ``Deliver`` (a ~120-character body with Chinese
and emoji) and a ``HistoryPage`` of 50 such Delivers — go through, in ONE run:

=========================  ====================================================================
impl                       encode / decode
=========================  ====================================================================
ours json                  ``CODECS["json"]``: Struct -> bytes / bytes -> validated Struct
ours protobuf              ``CODECS["protobuf"]``: same contract
stdlib json (dict)         ``json.dumps(d).encode()`` / ``json.loads(b)``
orjson (dict)              ``orjson.dumps(d)`` / ``orjson.loads(b)``
msgspec.json (dict)        untyped ``Encoder().encode(d)`` / ``Decoder().decode(b)``  [JSON bare]
protobuf (dict)            ``Envelope(kind=Msg(**d))`` serialized / parsed, every field read
                           into a dict                                             [Protobuf bare]
protobuf (pre-built)       ``SerializeToString()`` of a ready message / ``FromString`` only
=========================  ====================================================================

Each figure is the **median** over ``--repeat`` repeats of a timeit loop (GC off, loop
count calibrated so one repeat lasts ~25 ms, ~2 ms with ``--quick``); the impls are
interleaved within each repeat so that drift on a shared machine hits all of them alike.
``*_ratio_vs_bare`` divides a row by the bare reference of its format (marked above):
the target for ours is <= 1.3. The run also checks that our Protobuf bytes equal the
bare library's, and that one circuit-breaker decision and one token-bucket decision
each cost less than one JSON decode of the chat message (``policy.csv``).

Files, in ``DIR/<run-id>/``: ``manifest.json``, ``codecs.csv`` (``CODEC_COLUMNS``) and
``policy.csv`` (``POLICY_COLUMNS``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson

from chatcap.protocol import chat_pb2 as pb
from chatcap.protocol.codec import CODECS
from chatcap.protocol.messages import KINDS, Ack, Deliver, Envelope, HistoryPage
from chatcap.results import Column, new_manifest, new_run_id, write_manifest, write_table

CHAT_BODY = (
    "大家好！今天的会议改到下午三点 🎉 please bring the Q3 capacity numbers and latency "
    "charts; 我们讨论 fan-out 延迟和 p99 👍 thanks, see you soon!!"
)

CODEC_COLUMNS: tuple[Column, ...] = (
    Column("run_id", "str", "Run identifier, same as the folder name."),
    Column("envelope", "str", "`ack_small`, `deliver_chat` or `history_50`."),
    Column("format", "str", "`json` or `protobuf`."),
    Column("impl", "str", "Implementation measured (see bench/micro/codec_bench.py)."),
    Column("is_ours", "bool", "True for chatcap's codecs, false for bare reference rows."),
    Column("bytes", "int", "Encoded size, bytes."),
    Column("encode_ns", "float", "Median time per encode, ns."),
    Column("decode_ns", "float", "Median time per decode, ns."),
    Column("encode_ratio_vs_bare", "float", "encode_ns / the format's bare reference."),
    Column("decode_ratio_vs_bare", "float", "decode_ns / the format's bare reference."),
)

POLICY_COLUMNS: tuple[Column, ...] = (
    Column("run_id", "str", "Run identifier."),
    Column("op", "str", "Policy decision measured."),
    Column("ns_per_op", "float", "Median time per decision, ns."),
    Column("reference_op", "str", "What it is compared with."),
    Column("reference_ns", "float", "Median time of the reference op in the same run, ns."),
    Column("ratio_vs_reference", "float", "ns_per_op / reference_ns."),
    Column("cheaper_than_reference", "bool", "True when ratio_vs_reference < 1."),
)

BARE_REFERENCE = {"json": "msgspec.json (dict)", "protobuf": "protobuf (dict)"}
# Field names per kind: the Structs mirror the proto (tests/protocol checks it).
_PB_FIELDS = {kind: list(struct.__struct_fields__) for kind, struct in KINDS.items()}
_DELIVER_FIELDS = tuple(_PB_FIELDS["deliver"])


# --- the envelopes ----------------------------------------------------------------------


def sample_envelopes() -> dict[str, Envelope]:
    """The three benchmarked envelopes, by name."""
    deliver = Deliver(
        room="room-0042",
        seq=1_234_567,
        sender="user-01234",
        body=CHAT_BODY,
        ts_us=1_700_000_000_123_456,
        client_msg_id="c-01234-000987",
        sent_at_us=1_700_000_000_100_000,
    )
    page = tuple(
        msgspec.structs.replace(deliver, seq=deliver.seq + i, ts_us=deliver.ts_us + 97 * i)
        for i in range(50)
    )
    return {
        "ack_small": Ack(
            client_msg_id="c-01234-000987",
            room="room-0042",
            seq=1_234_567,
            ts_us=1_700_000_000_123_456,
        ),
        "deliver_chat": deliver,
        "history_50": HistoryPage(
            room="room-0042", messages=page, has_more=True, next_after_seq=page[-1].seq
        ),
    }


# --- bare reference implementations -----------------------------------------------------


def _pb_from_dict(kind: str, fields: dict[str, Any]) -> pb.Envelope:
    msg_cls = getattr(pb, KINDS[kind].__name__)
    if kind == "history":
        fields = {**fields, "messages": [pb.Deliver(**m) for m in fields["messages"]]}
    return pb.Envelope(**{kind: msg_cls(**fields)})


def _pb_encode_from_dict(kind_and_fields: tuple[str, dict[str, Any]]) -> bytes:
    kind, fields = kind_and_fields
    return _pb_from_dict(kind, fields).SerializeToString()


def _pb_decode_to_dict(data: bytes) -> dict[str, Any]:
    env = pb.Envelope.FromString(data)
    kind = env.WhichOneof("kind")
    msg = getattr(env, kind)
    if kind == "history":
        return {
            "room": msg.room,
            "messages": [{f: getattr(d, f) for f in _DELIVER_FIELDS} for d in msg.messages],
            "has_more": msg.has_more,
            "next_after_seq": msg.next_after_seq,
        }
    return {f: getattr(msg, f) for f in _PB_FIELDS[kind]}


_stdlib_loads = json.loads
_stdlib_dumps = json.dumps


def _stdlib_encode(doc: dict[str, Any]) -> bytes:
    return _stdlib_dumps(doc).encode()


@dataclass(frozen=True)
class Impl:
    """One row kind: how to encode (from what input) and decode."""

    name: str
    format: str
    is_ours: bool
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]
    encode_input: Callable[[Envelope], Any]


def _as_dict(msg: Envelope) -> dict[str, Any]:
    doc: dict[str, Any] = msgspec.to_builtins(msg)
    return doc


def _as_pb_input(msg: Envelope) -> tuple[str, dict[str, Any]]:
    doc = _as_dict(msg)
    kind = doc.pop("type")
    for entry in doc.get("messages", ()):
        entry.pop("type")
    return kind, {k: v for k, v in doc.items() if v is not None}


def _impls() -> list[Impl]:
    ours_json, ours_pb = CODECS["json"], CODECS["protobuf"]
    untyped_decode = msgspec.json.Decoder().decode
    return [
        Impl("ours json", "json", True, ours_json.encode, ours_json.decode, lambda m: m),
        Impl("ours protobuf", "protobuf", True, ours_pb.encode, ours_pb.decode, lambda m: m),
        Impl("stdlib json (dict)", "json", False, _stdlib_encode, _stdlib_loads, _as_dict),
        Impl("orjson (dict)", "json", False, orjson.dumps, orjson.loads, _as_dict),
        Impl(
            "msgspec.json (dict)",
            "json",
            False,
            msgspec.json.Encoder().encode,
            untyped_decode,
            _as_dict,
        ),
        Impl(
            "protobuf (dict)",
            "protobuf",
            False,
            _pb_encode_from_dict,
            _pb_decode_to_dict,
            _as_pb_input,
        ),
        Impl(
            "protobuf (pre-built)",
            "protobuf",
            False,
            lambda built: built.SerializeToString(),
            pb.Envelope.FromString,
            lambda m: _pb_from_dict(*_as_pb_input(m)),
        ),
    ]


# --- timing ---------------------------------------------------------------------------


def _loops_for(timer: timeit.Timer, target_s: float) -> int:
    """Smallest 1-2-5 loop count whose run lasts at least ``target_s`` (timeit.autorange)."""
    number = 1
    while True:
        for factor in (1, 2, 5):
            loops = number * factor
            if timer.timeit(loops) >= target_s:
                return loops
        number *= 10


def median_ns(timers: dict[str, timeit.Timer], repeat: int, target_s: float) -> dict[str, float]:
    """Median ns per call of each timer; the timers take turns within every repeat."""
    loops = {name: _loops_for(t, target_s) for name, t in timers.items()}
    samples: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(repeat):
        for name, t in timers.items():
            samples[name].append(t.timeit(loops[name]) / loops[name] * 1e9)
    return {name: statistics.median(s) for name, s in samples.items()}


def _call_timer(fn: Callable[[Any], Any], arg: Any) -> timeit.Timer:
    # A string statement: the loop calls fn directly, with no wrapper of ours around it.
    return timeit.Timer("fn(arg)", globals={"fn": fn, "arg": arg})


# --- the two measurements ---------------------------------------------------------------


def measure_codecs(run_id: str, repeat: int, target_s: float) -> list[dict[str, Any]]:
    """One row per envelope x impl (columns ``CODEC_COLUMNS``)."""
    rows: list[dict[str, Any]] = []
    impls = _impls()
    for envelope_name, msg in sample_envelopes().items():
        timers: dict[str, timeit.Timer] = {}
        sizes: dict[str, int] = {}
        for impl in impls:
            encode_input = impl.encode_input(msg)
            frame = impl.encode(encode_input)
            sizes[impl.name] = len(frame)
            timers[f"enc {impl.name}"] = _call_timer(impl.encode, encode_input)
            timers[f"dec {impl.name}"] = _call_timer(impl.decode, frame)
        ns = median_ns(timers, repeat, target_s)
        for impl in impls:
            bare = BARE_REFERENCE[impl.format]
            enc, dec = ns[f"enc {impl.name}"], ns[f"dec {impl.name}"]
            rows.append(
                {
                    "run_id": run_id,
                    "envelope": envelope_name,
                    "format": impl.format,
                    "impl": impl.name,
                    "is_ours": impl.is_ours,
                    "bytes": sizes[impl.name],
                    "encode_ns": round(enc, 1),
                    "decode_ns": round(dec, 1),
                    "encode_ratio_vs_bare": round(enc / ns[f"enc {bare}"], 3),
                    "decode_ratio_vs_bare": round(dec / ns[f"dec {bare}"], 3),
                }
            )
    return rows


def measure_policy(run_id: str, repeat: int, target_s: float) -> list[dict[str, Any]]:
    """Breaker and token-bucket decisions against one JSON decode of the chat message."""
    from chatcap.policy.breaker import BreakerConfig, CircuitBreaker
    from chatcap.policy.ratelimit import make_limiter

    breaker = CircuitBreaker(BreakerConfig())
    limiter = make_limiter("token_bucket", rate_per_s=1e9, burst=10**9, window_s=1.0)
    chat_frame = CODECS["json"].encode(sample_envelopes()["deliver_chat"])
    reference_op = "ours json decode deliver_chat"
    timers = {
        "breaker try_acquire+on_success": timeit.Timer(
            "acquire(1.0); success(1.0, 0.001)",
            globals={"acquire": breaker.try_acquire, "success": breaker.on_success},
        ),
        "token_bucket try_acquire": _call_timer(limiter.try_acquire, 1.0),
        reference_op: _call_timer(CODECS["json"].decode, chat_frame),
    }
    ns = median_ns(timers, repeat, target_s)
    reference_ns = ns.pop(reference_op)
    return [
        {
            "run_id": run_id,
            "op": op,
            "ns_per_op": round(value, 1),
            "reference_op": reference_op,
            "reference_ns": round(reference_ns, 1),
            "ratio_vs_reference": round(value / reference_ns, 3),
            "cheaper_than_reference": value < reference_ns,
        }
        for op, value in ns.items()
    ]


def protobuf_bytes_match() -> dict[str, bool]:
    """Per envelope: do ours, the dict-built and the pre-built message give equal bytes?"""
    ours = CODECS["protobuf"]
    result = {}
    for name, msg in sample_envelopes().items():
        kind, fields = _as_pb_input(msg)
        reference = _pb_from_dict(kind, fields).SerializeToString()
        result[name] = ours.encode(msg) == reference == _pb_encode_from_dict((kind, fields))
    return result


# --- report -----------------------------------------------------------------------------


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The codec rows as an aligned text table."""
    header = f"{'envelope':<13} {'impl':<21} {'bytes':>6} {'enc ns':>9} {'dec ns':>9}"
    lines = [header + f" {'enc/bare':>9} {'dec/bare':>9}", "-" * (len(header) + 20)]
    for r in rows:
        mark = " *" if r["is_ours"] else ""
        lines.append(
            f"{r['envelope']:<13} {r['impl'] + mark:<21} {r['bytes']:>6} {r['encode_ns']:>9.0f} "
            f"{r['decode_ns']:>9.0f} {r['encode_ratio_vs_bare']:>8.2f}x "
            f"{r['decode_ratio_vs_bare']:>8.2f}x"
        )
    return "\n".join(lines)


def _ours_vs(rows: Sequence[dict[str, Any]], ours: str, other: str) -> list[str]:
    by_key = {(r["envelope"], r["impl"]): r for r in rows}
    lines = []
    for envelope in dict.fromkeys(r["envelope"] for r in rows):
        a, b = by_key[(envelope, ours)], by_key[(envelope, other)]
        lines.append(
            f"  {envelope:<13} {ours} / {other}: encode {a['encode_ns'] / b['encode_ns']:.2f}x, "
            f"decode {a['decode_ns'] / b['decode_ns']:.2f}x"
        )
    return lines


def summarize(
    codec_rows: Sequence[dict[str, Any]],
    policy_rows: Sequence[dict[str, Any]],
    bytes_match: dict[str, bool],
) -> str:
    """The human summary printed at the end of a run."""
    lines = [format_table(codec_rows), "", "* = ours. Ratios vs the bare path of the same format:"]
    lines += _ours_vs(codec_rows, "ours json", BARE_REFERENCE["json"])
    lines += _ours_vs(codec_rows, "ours json", "orjson (dict)")
    lines += _ours_vs(codec_rows, "ours protobuf", BARE_REFERENCE["protobuf"])
    over = [
        f"{r['envelope']}/{r['impl']}"
        for r in codec_rows
        if r["is_ours"] and max(r["encode_ratio_vs_bare"], r["decode_ratio_vs_bare"]) > 1.3
    ]
    lines.append(f"  target <= 1.3x: {'met' if not over else 'MISSED for ' + ', '.join(over)}")
    ok = all(bytes_match.values())
    lines.append(
        f"protobuf bytes, ours == bare library: {'yes' if ok else 'NO'} "
        f"({', '.join(f'{k}={v}' for k, v in bytes_match.items())})"
    )
    by_key = {(r["envelope"], r["impl"]): r for r in codec_rows}
    pb_bytes = by_key[("deliver_chat", "ours protobuf")]["bytes"]
    json_bytes = by_key[("deliver_chat", "ours json")]["bytes"]
    lines.append(
        f"chat Deliver: protobuf {pb_bytes} B vs JSON {json_bytes} B "
        f"({100 * (1 - pb_bytes / json_bytes):.0f}% smaller)"
    )
    for r in policy_rows:
        verdict = "cheaper" if r["cheaper_than_reference"] else "NOT cheaper"
        lines.append(
            f"policy: {r['op']} {r['ns_per_op']:.0f} ns = {r['ratio_vs_reference']:.2f}x "
            f"one JSON decode of the chat Deliver ({r['reference_ns']:.0f} ns): {verdict}"
        )
    return "\n".join(lines)


# --- entry point ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench codecs", description=__doc__.split("\n")[0] if __doc__ else None
    )
    parser.add_argument("--out", type=Path, default=Path("results/codecs"), help="parent folder")
    parser.add_argument("--quick", action="store_true", help="short loops (for tests)")
    parser.add_argument("--repeat", type=int, default=None, help="repeats (default 7, quick 3)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the summary, write the run folder; 1 if bytes differ."""
    args = build_parser().parse_args(argv)
    repeat = args.repeat if args.repeat is not None else (3 if args.quick else 7)
    if repeat < 1:
        print("--repeat must be >= 1", file=sys.stderr)
        return 2
    target_s = 0.002 if args.quick else 0.025
    now = datetime.now(UTC)
    run_id = new_run_id(now, "codecs-quick" if args.quick else "codecs")
    run_dir = args.out / run_id

    print(f"[codecs] {run_id}: 3 envelopes x 7 impls, median of {repeat} repeats", flush=True)
    codec_rows = measure_codecs(run_id, repeat, target_s)
    print("[codecs] policy decisions vs one JSON decode", flush=True)
    policy_rows = measure_policy(run_id, repeat, target_s)
    bytes_match = protobuf_bytes_match()

    manifest = new_manifest(
        run_id,
        command=["python", "-m", "bench", "codecs", *(argv if argv is not None else sys.argv[1:])],
        created_utc=now.isoformat(),
        timing={
            "statistic": "median",
            "repeat": repeat,
            "target_s_per_repeat": target_s,
            "gc": "disabled during loops (timeit)",
        },
        bare_reference=BARE_REFERENCE,
        protobuf_bytes_match=bytes_match,
    )
    write_manifest(run_dir, manifest)
    write_table(run_dir / "codecs.csv", codec_rows, CODEC_COLUMNS)
    write_table(run_dir / "policy.csv", policy_rows, POLICY_COLUMNS)
    print(summarize(codec_rows, policy_rows, bytes_match))
    print(f"[codecs] wrote {run_dir}/{{manifest.json,codecs.csv,policy.csv}}")
    return 0 if all(bytes_match.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
