"""The scenario: one TOML file that the server, the model and the load test all read.

The file is loaded once into a tree of frozen dataclasses and validated in one place.
Every field carries its default, its unit (in the name), its allowed range and one line
of documentation in ``field(metadata=...)``; the loader, the error messages, the
``check-scenario`` printout and ``scenarios/README.md`` are all generated from that.

Rules of the loader:

* unknown keys are errors (a typo must never be silently ignored), with a suggestion;
* a wrong type, an out-of-range value or an unknown choice is an error that names the
  file, the dotted key, the value and what is allowed;
* cross-field rules (warm-up shorter than the run, a fixed room no larger than the user
  count, …) are checked after the fields, with the same kind of message.

The first problem found is raised as :class:`ScenarioError`; nothing starts.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from chatcap.policy.backoff import JITTERS
from chatcap.policy.budget import BUDGETS
from chatcap.policy.ratelimit import LIMITERS

INF = math.inf
CODEC_NAMES = ("json", "protobuf")  # every codec, in the order rows and columns use
# The codec label of a row that pools every codec of a run (a mixed workload's total).
CODEC_MIX = "mix"


class ScenarioError(ValueError):
    """A scenario file or override is invalid; the message says where and why."""


def opt(
    default: Any,
    doc: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] | None = None,
    anchor: str = "",
    zero_ok: bool = False,
) -> Any:
    """A documented scenario field: default, meaning, allowed range or choices.

    ``zero_ok`` lets exactly 0 through besides the range (0 meaning "off", as in
    ``server.ping_interval_s``); its range then reads e.g. ``0 or ≥ 0.05 and ≤ 3600``."""
    meta = {
        "doc": doc,
        "ge": ge,
        "gt": gt,
        "le": le,
        "choices": choices,
        "anchor": anchor,
        "zero_ok": zero_ok,
    }
    if isinstance(default, list | dict):
        factory = default.copy
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type[Any], doc: str) -> Any:
    """A nested table of the scenario, built from its own defaults when absent."""
    return field(default_factory=cls, metadata={"doc": doc, "section": True})


# ---------------------------------------------------------------------------- server


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Store connection pool (HikariCP meanings)."""

    size: int = opt(10, "connections at most", ge=1, le=1000, anchor="maximumPoolSize 10")
    min_idle: int | None = opt(
        None, "idle connections kept; absent = size", ge=0, anchor="minimumIdle = max size"
    )
    acquire_timeout_ms: float = opt(
        30_000.0,
        "wait for a free connection before store_busy; inf = forever, 0 = never wait",
        ge=0,
        anchor="connectionTimeout 30000",
    )
    idle_timeout_s: float = opt(
        600.0,
        "retire connections idle this long (only above min_idle); 0 = never",
        ge=0,
        anchor="idleTimeout 600000 ms",
    )
    max_lifetime_s: float = opt(
        1800.0,
        "retire a connection this old when it is returned; 0 = never",
        ge=0,
        anchor="maxLifetime 1800000 ms",
    )
    leak_detection_ms: float = opt(
        0.0,
        "warn when a connection is held longer; 0 = off",
        ge=0,
        anchor="leakDetectionThreshold 0",
    )


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """Per-user send rate limiter, chosen by name."""

    algorithm: str = opt(
        "token_bucket", "limiter algorithm (`none` disables)", choices=tuple(LIMITERS)
    )
    rate_per_s: float = opt(20.0, "sustained sends per second per user", gt=0)
    burst: int = opt(40, "bucket size / queue length (bucket algorithms)", ge=1)
    window_s: float = opt(1.0, "window length (window algorithms)", gt=0)


@dataclass(frozen=True, slots=True)
class BreakerSection:
    """Circuit breaker around the store (Resilience4j meanings and defaults)."""

    enabled: bool = opt(True, "false: every store call goes through")
    window_type: str = opt(
        "count", "sliding window kind", choices=("count", "time"), anchor="COUNT_BASED"
    )
    window_size: int = opt(100, "calls (count window) or seconds (time window)", ge=1, anchor="100")
    minimum_calls: int = opt(100, "calls recorded before a rate is computed", ge=1, anchor="100")
    failure_rate_pct: float = opt(50.0, "open at this failure rate, %", gt=0, le=100, anchor="50")
    slow_call_duration_s: float = opt(
        60.0, "a call slower than this is slow", gt=0, anchor="60000 ms"
    )
    slow_call_rate_pct: float = opt(
        100.0, "open at this slow-call rate, %", gt=0, le=100, anchor="100"
    )
    open_duration_s: float = opt(60.0, "stay open this long", gt=0, anchor="60000 ms")
    half_open_calls: int = opt(10, "trial calls permitted in half-open", ge=1, anchor="10")
    max_half_open_wait_s: float = opt(
        0.0,
        "back to open if half-open lasts longer; 0 = wait for the trial calls",
        ge=0,
        anchor="0",
    )


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """The message store (SQLite in WAL mode) and the write path in front of it."""

    path: str = opt("chatcap.db", "database file; the server's --db overrides it")
    synchronous: str = opt(
        "NORMAL",
        "SQLite synchronous: NORMAL survives kill -9; FULL also survives power loss",
        choices=("OFF", "NORMAL", "FULL", "EXTRA"),
    )
    batch_max: int = opt(64, "sends committed per transaction at most", ge=1, le=100_000)
    write_queue_max: int = opt(10_000, "sends waiting for the writer before `overloaded`", ge=1)
    call_timeout_s: float = opt(5.0, "deadline of one store call (commit or read)", gt=0)
    max_in_flight_batches: int = opt(
        1,
        "batches committing or waiting for a pool connection at once; SQLite commits one "
        "at a time, so more only shrinks batches (fault latency and theory cases raise it)",
        ge=1,
    )
    commit_on: str = opt(
        "auto",
        "where a commit runs: 'loop' (the event loop's thread: no thread hops; WAL with "
        "NORMAL/OFF does not fsync), 'thread' (a pool thread: FULL/EXTRA, several "
        "processes), 'auto' = loop for NORMAL/OFF with one process, else thread",
        choices=("auto", "loop", "thread"),
    )


@dataclass(frozen=True, slots=True)
class FaultEpisode:
    """A window of injected store trouble, relative to the start of the run."""

    start_s: float = opt(0.0, "episode start after run start", ge=0)
    duration_s: float = opt(10.0, "episode length", gt=0)
    store_latency_ms: float = opt(0.0, "added to every store commit", ge=0)
    store_error_rate: float = opt(0.0, "share of commits that fail", ge=0, le=1)


@dataclass(frozen=True, slots=True)
class FaultsConfig:
    """Fault injection — testing aids, all off by default."""

    store_latency_ms: float = opt(0.0, "added to every store commit, always", ge=0)
    store_error_rate: float = opt(0.0, "share of commits that fail, always", ge=0, le=1)
    cpu_burn_us_per_msg: float = opt(0.0, "busy CPU per handled send, µs", ge=0, le=1e6)
    episodes: tuple[FaultEpisode, ...] = field(
        default=(),
        metadata={"doc": "timed fault windows ([[server.faults.episodes]])", "item": FaultEpisode},
    )


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS on the chat port (https:// and wss://); off while both files are empty."""

    cert_file: str = opt("", "PEM certificate chain the server presents (with key_file)")
    key_file: str = opt("", "PEM private key of cert_file (with cert_file)")
    ca_file: str = opt(
        "", "PEM CA bundle chatcap's own clients (generator, calibration) trust; empty = system"
    )

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """The reference chat server."""

    processes: int = opt(1, "server processes (event loops) sharing one store", ge=1, le=64)
    max_message_bytes: int = opt(65_536, "largest accepted frame", ge=256, le=16 * 2**20)
    max_connections_per_ip: int = opt(1000, "open WebSockets per client IP", ge=1)
    handshake_rate_per_s: float = opt(200.0, "new handshakes per second per IP", gt=0)
    handshake_burst: int = opt(400, "handshake burst per IP", ge=1)
    origins: list[str] = opt(
        [],
        "browser origins allowed (CORS on REST, the WebSocket Origin check), e.g. "
        "'https://chat.example.com'; '*' = any; empty = no cross-origin page",
    )
    web: bool = opt(True, "serve the chat page at / (static HTML + JS)")
    compression: bool = opt(False, "permessage-deflate (costs CPU and ~38 KiB/connection)")
    outbound_buffer_max_bytes: int = opt(
        1_048_576,
        "bytes queued to one client before it is closed as a slow consumer (1008)",
        ge=1024,
    )
    replay_max_pages: int = opt(
        10, "history pages replayed after a Join with since_seq; more via REST", ge=1
    )
    history_page_max: int = opt(500, "messages per history page / replay page", ge=1)
    drain_timeout_s: float = opt(10.0, "graceful shutdown deadline", gt=0)
    request_timeout_s: float = opt(10.0, "deadline of one HTTP request or replay", gt=0)
    open_timeout_s: float = opt(10.0, "deadline of a WebSocket opening handshake", gt=0)
    stage_metrics: bool = opt(
        True,
        "time every Send's stages and the garbage collector's pauses (histograms on "
        "/metrics); false leaves both out (bench server-overhead measures what they cost)",
    )
    ping_interval_s: float = opt(
        20.0,
        "keepalive ping to each connection this often; 0 = no pings",
        ge=0.05,
        le=3600,
        anchor="websockets ping_interval 20",
        zero_ok=True,
    )
    ping_timeout_s: float = opt(
        20.0,
        "close a connection (1011) whose pong is this late; 0 = never",
        ge=0.05,
        le=3600,
        anchor="websockets ping_timeout 20",
        zero_ok=True,
    )
    auth: str = opt(
        "open", "`open`: any user name; `users`: password file", choices=("open", "users")
    )
    token_ttl_s: float = opt(3600.0, "access token lifetime", gt=0)
    pool: PoolConfig = section(PoolConfig, "store connection pool")
    rate_limit: RateLimitConfig = section(RateLimitConfig, "per-user rate limiter")
    breaker: BreakerSection = section(BreakerSection, "store circuit breaker")
    store: StoreConfig = section(StoreConfig, "message store")
    faults: FaultsConfig = section(FaultsConfig, "fault injection")
    tls: TlsConfig = section(TlsConfig, "TLS (https://, wss://)")


# ---------------------------------------------------------------------------- workload


@dataclass(frozen=True, slots=True)
class RoomSizeConfig:
    """How many members each room has."""

    distribution: str = opt(
        "fixed",
        "fixed | uniform (min..max) | zipf (exponent zipf_s, capped at max)",
        choices=("fixed", "uniform", "zipf"),
    )
    size: int = opt(10, "members per room (fixed)", ge=1)
    min: int = opt(2, "smallest room (uniform, zipf)", ge=1)
    max: int = opt(50, "largest room (uniform, zipf)", ge=1)
    zipf_s: float = opt(1.5, "zipf exponent", gt=1)


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    """Who sends what, how often."""

    users: int = opt(100, "connected users", ge=1, le=10_000_000)
    rooms: int = opt(10, "rooms", ge=1, le=1_000_000)
    room_size: RoomSizeConfig = section(RoomSizeConfig, "room size distribution")
    send_rate_per_user_per_s: float = opt(0.5, "sends per second per user (open loop)", gt=0)
    arrival: str = opt(
        "poisson",
        "send process: poisson | constant (open loop) | closed (think time)",
        choices=("poisson", "constant", "closed"),
    )
    think_time_s: float = opt(2.0, "closed loop: pause between an ack and the next send", ge=0)
    body_bytes: int = opt(120, "message body size (UTF-8 bytes)", ge=1)
    codec_mix: dict[str, float] = opt(
        {"json": 0.5, "protobuf": 0.5}, "share of users per codec (weights)"
    )
    duration_s: float = opt(60.0, "run length including warm-up", gt=0)
    warmup_s: float = opt(10.0, "cut from the start before statistics", ge=0)


# ---------------------------------------------------------------------------- client


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """Client retries of an unacked send (same client_msg_id, deduplicated by the server)."""

    max_attempts: int = opt(4, "attempts in all; 1 = never retry", ge=1, le=100)
    base_ms: float = opt(100.0, "first backoff", gt=0)
    cap_ms: float = opt(10_000.0, "longest backoff", gt=0)
    multiplier: float = opt(2.0, "backoff growth per attempt", ge=1)
    jitter: str = opt("full", "AWS jitter kind", choices=tuple(JITTERS))


@dataclass(frozen=True, slots=True)
class BudgetConfig:
    """Retry budget: retries at most a share of requests."""

    kind: str = opt(
        "ratio", "ratio (Finagle) | token (gRPC throttling) | none", choices=tuple(BUDGETS)
    )
    ratio: float = opt(0.2, "ratio: retries per request", ge=0, le=10, anchor="Finagle 0.2")
    min_retries_per_s: float = opt(
        10.0, "ratio: retries always allowed per second", ge=0, anchor="Finagle 10"
    )
    window_s: float = opt(10.0, "ratio: accounting window", gt=0, anchor="Finagle ttl 10 s")
    max_tokens: float = opt(10.0, "token: bucket size", gt=0)
    token_ratio: float = opt(0.1, "token: tokens returned per success", gt=0)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """The load generator's client behaviour."""

    ack_timeout_ms: float = opt(5000.0, "give up waiting for an ack", gt=0)
    retry: RetryConfig = section(RetryConfig, "retry and backoff")
    retry_budget: BudgetConfig = section(BudgetConfig, "retry budget")


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The SimPy model's own knobs (the server and the load test ignore them)."""

    calibration: str = opt(
        "", "calibration JSON (python -m bench calibrate); empty = built-in defaults"
    )
    cpu: bool = opt(True, "model each server loop's CPU; false = zero CPU costs (theory)")
    store_service: str = opt(
        "lognormal",
        "store commit time distribution",
        choices=("exponential", "deterministic", "lognormal", "empirical"),
    )
    store_service_ms: float = opt(0.04, "mean commit time of a batch of one message", gt=0)
    store_per_msg_ms: float = opt(0.015, "added to a commit per further message in it", ge=0)
    store_service_cv: float = opt(1.0, "coefficient of variation (lognormal)", gt=0, le=20)
    store_concurrency: int = opt(
        1, "commits the store runs at once (SQLite: 1); 0 = one per pool connection", ge=0
    )
    timeseries_interval_s: float = opt(1.0, "time series bucket width", gt=0)
    scrape_interval_s: float = opt(
        0.0,
        "a GET /metrics every this often, charged to each loop (calibration scrape_us); 0 = none",
        ge=0,
        le=3600,
    )
    competing_cpu_share: float = opt(
        0.0,
        "share of each server process's CPU taken by other work on its cores (a load "
        "generator sharing them); every CPU cost is divided by 1 - share",
        ge=0,
        le=0.95,
    )
    replications: int = opt(5, "replications per point when the CLI is not told", ge=1, le=1000)


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole scenario file."""

    name: str = opt("", "scenario name; defaults to the file name")
    description: str = opt("", "one line for humans")
    seed: int = opt(1, "root seed; replications derive theirs from it", ge=0, le=2**63 - 1)
    server: ServerConfig = section(ServerConfig, "the server")
    workload: WorkloadConfig = section(WorkloadConfig, "the offered load")
    client: ClientConfig = section(ClientConfig, "client timeouts and retries")
    sim: SimConfig = section(SimConfig, "the SimPy model")

    @property
    def offered_per_s(self) -> float:
        """Open-loop offered send rate of the whole workload."""
        return self.workload.users * self.workload.send_rate_per_user_per_s

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for manifests and for re-loading with overrides)."""
        plain: dict[str, Any] = _plain(asdict(self))
        return plain

    def with_overrides(self, overrides: Mapping[str, Any]) -> Scenario:
        """A new validated scenario with dotted keys replaced, e.g. ``{"server.pool.size": 4}``."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for part in parents:
                if not isinstance(node.get(part), dict):
                    hint = did_you_mean_key(dotted, dotted_keys(data))
                    raise ScenarioError(f"override {dotted!r}: no table {part!r}{hint}")
                node = node[part]
            if leaf not in node:
                hint = did_you_mean_key(dotted, dotted_keys(data))
                raise ScenarioError(f"override {dotted!r}: unknown key {leaf!r}{hint}")
            node[leaf] = value
        return load_scenario_data(data, source="<overrides>")


# ---------------------------------------------------------------------------- loading

T = TypeVar("T")


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate a scenario file; raises :class:`ScenarioError`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    data.setdefault("name", path.stem)
    return load_scenario_data(data, source=str(path))


def parse_value(text: str) -> Any:
    """A command-line value read as TOML (``8``, ``2.5``, ``true``, ``inf``, ``"x"``, ``[1, 2]``);
    a bare word such as ``fixed`` that is not TOML is taken as a string."""
    try:
        return tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """`` — did you mean 'x'?`` for the closest of ``known`` to a mistyped ``key``; ``""``
    when none is close. One wording for scenario files and command-line overrides."""
    hint = difflib.get_close_matches(key, list(known), n=1)
    return f" — did you mean {hint[0]!r}?" if hint else ""


def dotted_keys(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every leaf key of a scenario's plain data, dotted (``server.store.batch_max``)."""
    keys: list[str] = []
    for name, value in data.items():
        if isinstance(value, Mapping):
            keys += dotted_keys(value, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def did_you_mean_key(dotted: str, keys: Iterable[str]) -> str:
    """:func:`did_you_mean` for a dotted override: the leaf name matched among every
    key's leaf (``server.batch_max`` → ``server.store.batch_max``), then the closest path."""
    by_leaf: dict[str, list[str]] = {}
    for key in keys:
        by_leaf.setdefault(key.rpartition(".")[2], []).append(key)
    leaf = difflib.get_close_matches(dotted.rpartition(".")[2], by_leaf, n=1)
    if not leaf:
        return ""
    best = difflib.get_close_matches(dotted, by_leaf[leaf[0]], n=1, cutoff=0.0)
    return f" — did you mean {best[0]!r}?"


def load_scenario_data(data: Mapping[str, Any], source: str = "<data>") -> Scenario:
    """Validate plain data (as from TOML) into a :class:`Scenario`."""
    scenario = _build(Scenario, data, "", source)
    _check_cross_fields(scenario, source)
    return scenario


def _build(cls: type[T], data: Any, prefix: str, source: str) -> T:
    if not isinstance(data, Mapping):
        where = prefix.rstrip(".") or "top level"
        raise ScenarioError(f"{source}: [{where}] must be a table, got {_show(data)}")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            also = did_you_mean(key, known)
            raise ScenarioError(
                f"{source}: unknown key {prefix}{key}{also} (allowed here: {', '.join(known)})"
            )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in known.items():
        if name in data:
            values[name] = _convert(f, hints[name], data[name], prefix + name, source)
    return cls(**values)


def _convert(f: Field[Any], hint: Any, value: Any, key: str, source: str) -> Any:
    meta = f.metadata
    if meta.get("section"):
        return _build(hint, value, key + ".", source)
    if "item" in meta:
        if not isinstance(value, list):
            raise ScenarioError(f"{source}: {key} must be an array of tables, got {_show(value)}")
        return tuple(_build(meta["item"], v, f"{key}[{i}].", source) for i, v in enumerate(value))
    base = _base_type(hint)
    checked = _check_type(base, value, key, source)
    _check_range(meta, checked, key, source)
    return checked


def _base_type(hint: Any) -> Any:
    """``int | None`` → int; ``list[str]`` stays as is."""
    if isinstance(hint, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0]
    return hint


def _check_type(base: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(base)
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ScenarioError(f"{source}: {key} = {_show(value)}: must be a list of strings")
        return list(value)
    if origin is dict:
        return _check_mix(value, key, source)
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and math.isnan(value):
            raise ScenarioError(f"{source}: {key} = nan: must be a number")
        value = float(value) if ok else value
    else:
        ok = isinstance(value, base)
    if not ok:
        raise ScenarioError(f"{source}: {key} = {_show(value)}: must be {_type_word(base)}")
    return value


def _check_mix(value: Any, key: str, source: str) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise ScenarioError(
            f"{source}: {key} = {_show(value)}: must be a table of codec weights, "
            f"e.g. {{json = 1, protobuf = 1}}"
        )
    mix: dict[str, float] = {}
    for codec, weight in value.items():
        if codec not in CODEC_NAMES:
            raise ScenarioError(
                f"{source}: {key}.{codec}: unknown codec (allowed: {', '.join(CODEC_NAMES)})"
            )
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not (0 <= weight < INF)
        ):
            raise ScenarioError(f"{source}: {key}.{codec} = {_show(weight)}: must be a weight ≥ 0")
        mix[codec] = float(weight)
    if sum(mix.values()) <= 0:
        raise ScenarioError(f"{source}: {key}: weights must not all be 0")
    return mix


def _check_range(meta: Mapping[str, Any], value: Any, key: str, source: str) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ScenarioError(
            f"{source}: {key} = {_show(value)}: must be one of {', '.join(choices)}"
        )
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    if meta.get("zero_ok") and value == 0:
        return
    ge, gt, le = meta.get("ge"), meta.get("gt"), meta.get("le")
    bad = (
        (ge is not None and value < ge)
        or (gt is not None and value <= gt)
        or (le is not None and value > le)
    )
    if bad:
        raise ScenarioError(f"{source}: {key} = {_show(value)}: must be {_range_text(meta)}")


def _range_text(meta: Mapping[str, Any]) -> str:
    parts = []
    if meta.get("ge") is not None:
        parts.append(f"≥ {meta['ge']:g}")
    if meta.get("gt") is not None:
        parts.append(f"> {meta['gt']:g}")
    if meta.get("le") is not None:
        parts.append(f"≤ {meta['le']:g}")
    text = " and ".join(parts) if parts else "any"
    return f"0 or {text}" if meta.get("zero_ok") else text


def _type_word(base: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        base, str(base)
    )


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # show 150, as the file most likely said, not 150.0
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def _fail(source: str, key: str, value: Any, rule: str) -> ScenarioError:
    return ScenarioError(f"{source}: {key} = {_show(value)}: {rule}")


def _check_cross_fields(s: Scenario, source: str) -> None:
    w, srv = s.workload, s.server
    if w.warmup_s >= w.duration_s:
        raise _fail(
            source,
            "workload.warmup_s",
            w.warmup_s,
            f"must be less than workload.duration_s ({w.duration_s:g})",
        )
    rs = w.room_size
    if rs.distribution == "fixed" and rs.size > w.users:
        raise _fail(
            source, "workload.room_size.size", rs.size, f"must be ≤ workload.users ({w.users})"
        )
    if rs.distribution != "fixed" and rs.min > rs.max:
        raise _fail(
            source, "workload.room_size.min", rs.min, f"must be ≤ workload.room_size.max ({rs.max})"
        )
    if rs.distribution != "fixed" and rs.max > w.users:
        raise _fail(
            source, "workload.room_size.max", rs.max, f"must be ≤ workload.users ({w.users})"
        )
    envelope_overhead = 512
    if w.body_bytes > srv.max_message_bytes - envelope_overhead:
        raise _fail(
            source,
            "workload.body_bytes",
            w.body_bytes,
            f"must be ≤ server.max_message_bytes − {envelope_overhead} "
            f"({srv.max_message_bytes - envelope_overhead})",
        )
    if srv.pool.min_idle is not None and srv.pool.min_idle > srv.pool.size:
        raise _fail(
            source,
            "server.pool.min_idle",
            srv.pool.min_idle,
            f"must be ≤ server.pool.size ({srv.pool.size})",
        )
    for i, origin in enumerate(srv.origins):
        problem = origin_problem(origin)
        if problem:
            raise _fail(source, f"server.origins[{i}]", origin, problem)
    tls = srv.tls
    if bool(tls.cert_file) != bool(tls.key_file):
        given, missing = ("cert_file", "key_file") if tls.cert_file else ("key_file", "cert_file")
        raise _fail(
            source,
            f"server.tls.{given}",
            getattr(tls, given),
            f"needs server.tls.{missing} too (both or neither)",
        )
    retry = s.client.retry
    if retry.base_ms > retry.cap_ms:
        raise _fail(
            source,
            "client.retry.base_ms",
            retry.base_ms,
            f"must be ≤ client.retry.cap_ms ({retry.cap_ms:g})",
        )


_ORIGIN = re.compile(r"^(https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")


def origin_problem(origin: str) -> str:
    """Why ``origin`` is not a browser Origin (``scheme://host[:port]``) or ``*``; "" if it is."""
    if origin == "*":
        return ""
    if not _ORIGIN.match(origin):
        return (
            "must be '*' or an origin such as 'https://chat.example.com' or "
            "'http://127.0.0.1:8080' (scheme://host[:port]: no path, no trailing slash)"
        )
    port = origin.rsplit(":", 1)[-1]
    if origin.count(":") == 2 and port.isdigit() and not 1 <= int(port) <= 65535:
        return "port must be in 1..65535"
    return ""


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------- printing


def to_toml(scenario: Scenario, *, comments: bool = True) -> str:
    """The fully resolved scenario as TOML, each key commented with its meaning."""
    lines: list[str] = []
    _emit(scenario, "", lines, comments)
    return "\n".join(lines).strip() + "\n"


def _emit(obj: Any, prefix: str, lines: list[str], comments: bool) -> None:
    nested: list[tuple[str, Any, Field[Any]]] = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("section") or "item" in f.metadata:
            nested.append((f.name, value, f))
            continue
        if value is None:
            if comments:
                lines.append(f"# {f.name} = (absent)  # {f.metadata['doc']}")
            continue
        note = f"  # {_doc_line(f)}" if comments else ""
        lines.append(f"{f.name} = {_toml_value(value)}{note}")
    for name, value, f in nested:
        if "item" in f.metadata:
            for item in value:
                lines += ["", f"[[{prefix}{name}]]"]
                _emit(item, f"{prefix}{name}.", lines, comments)
            continue
        lines += ["", f"[{prefix}{name}]" + (f"  # {f.metadata['doc']}" if comments else "")]
        _emit(value, f"{prefix}{name}.", lines, comments)


def _doc_line(f: Field[Any]) -> str:
    meta = f.metadata
    text = str(meta["doc"])
    if meta.get("choices"):
        text += f" [{' | '.join(meta['choices'])}]"
    elif any(meta.get(k) is not None for k in ("ge", "gt", "le")):
        text += f" [{_range_text(meta)}]"
    if meta.get("anchor"):
        text += f" (anchor: {meta['anchor']})"
    return text


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def reference_markdown() -> str:
    """A Markdown table of every key, default, range and meaning (scenarios/README.md)."""
    out = ["| key | default | allowed | meaning |", "|---|---|---|---|"]

    def walk(cls: type[Any], prefix: str) -> None:
        for f in fields(cls):
            meta = f.metadata
            if meta.get("section"):
                walk(_base_type(typing.get_type_hints(cls)[f.name]), f"{prefix}{f.name}.")
                continue
            if "item" in meta:
                walk(meta["item"], f"{prefix}{f.name}[].")
                continue
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
            shown = "absent" if default is None else f"`{_toml_value(default)}`"
            allowed = " \\| ".join(meta["choices"]) if meta.get("choices") else _range_text(meta)
            doc = meta["doc"] + (f" (anchor: {meta['anchor']})" if meta.get("anchor") else "")
            out.append(f"| `{prefix}{f.name}` | {shown} | {allowed} | {doc} |")

    walk(Scenario, "")
    return "\n".join(out)
