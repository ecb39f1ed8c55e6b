"""Queueing theory: the closed forms that the SimPy model is checked against.

Every function here is pure (numbers in, numbers out). Rates are per second
(``_per_s``), times in seconds (``_s``), loads in Erlangs (offered load
``a = λ/μ``, the mean number of busy servers if none were lost). Formulas are the
textbook ones — Kleinrock, *Queueing Systems* vol. 1 (1975); Gross, Shortle,
Thompson & Harris, *Fundamentals of Queueing Theory* (4th ed., 2008), cited as GSTH.

Two kinds of system appear:

* **delay systems** (M/M/1, M/M/c, M/D/1, M/G/1): nobody is turned away; the
  wait ``Wq`` is the time from arrival to the start of service, the response
  time ``W = Wq + E[S]``;
* **loss systems** (Erlang B = M/G/c/c, and M/M/1/K): an arrival that finds the
  system full is blocked (``p_block``); the means are over admitted arrivals.

:func:`theory_for_scenario` says whether a scenario file is one of these classic
cases and, if so, which and what it predicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chatcap.scenario import FaultsConfig, Scenario

__all__ = [
    "QueueMetrics",
    "TheoryPrediction",
    "erlang_b",
    "erlang_c",
    "littles_law_check",
    "littles_law_l",
    "md1",
    "mg1",
    "mm1",
    "mm1k",
    "mmc",
    "mmcc",
    "theory_for_scenario",
]


@dataclass(frozen=True, slots=True)
class QueueMetrics:
    """Steady-state means of one queueing system.

    Attributes:
        rho: utilisation, the long-run busy fraction of one server (``λ/(cμ)`` in a
            delay system; the carried load per server in a loss system).
        p_wait: probability that an admitted arrival has to wait for service.
        mean_wait_s: ``Wq``, mean time from arrival to the start of service.
        mean_response_s: ``W = Wq + E[S]``, mean time from arrival to departure.
        mean_queue_len: ``Lq``, mean number waiting (not in service).
        mean_in_system: ``L``, mean number waiting or in service.
        throughput_per_s: admitted (= completed) arrivals per second.
        p_block: probability that an arrival is turned away (0 in a delay system).
    """

    rho: float
    p_wait: float
    mean_wait_s: float
    mean_response_s: float
    mean_queue_len: float
    mean_in_system: float
    throughput_per_s: float
    p_block: float = 0.0


# ---------------------------------------------------------------------------- checks


def _check_servers(servers: int, least: int) -> None:
    if isinstance(servers, bool) or not isinstance(servers, int) or servers < least:
        raise ValueError(f"servers = {servers!r}: must be an integer ≥ {least}")


def _check_nonnegative(name: str, value: float) -> None:
    if not (0 <= value < math.inf):
        raise ValueError(f"{name} = {value!r}: must be a finite number ≥ 0")


def _check_positive(name: str, value: float) -> None:
    if not (0 < value < math.inf):
        raise ValueError(f"{name} = {value!r}: must be a finite number > 0")


def _check_stable(rho: float) -> None:
    if rho >= 1:
        raise ValueError(f"unstable: ρ = {rho:.6g} ≥ 1, the queue grows without bound")


# ---------------------------------------------------------------------------- Erlang


def erlang_b(servers: int, offered_erlangs: float) -> float:
    """Blocking probability of the Erlang loss system M/G/c/c (Erlang B).

    ``servers`` = c ≥ 0, ``offered_erlangs`` = a = λ·E[S]. Computed by the standard
    recursion ``B(0) = 1, B(k) = a·B(k−1) / (k + a·B(k−1))`` (GSTH §2.5; Kleinrock
    §3.7), which never forms ``a^c/c!`` and so stays stable for any c. The result
    depends on the service distribution only through its mean (insensitivity).
    """
    _check_servers(servers, 0)
    _check_nonnegative("offered_erlangs", offered_erlangs)
    blocking = 1.0
    for k in range(1, servers + 1):
        blocking = offered_erlangs * blocking / (k + offered_erlangs * blocking)
    return blocking


def erlang_c(servers: int, offered_erlangs: float) -> float:
    """Probability of waiting in M/M/c (Erlang C), for ``ρ = a/c < 1``.

    From Erlang B: ``C = c·B / (c − a·(1 − B))`` (GSTH §2.3), stable for large c.
    Raises ValueError ("unstable: ρ = …") when ``ρ ≥ 1``.
    """
    _check_servers(servers, 1)
    _check_nonnegative("offered_erlangs", offered_erlangs)
    _check_stable(offered_erlangs / servers)
    blocking = erlang_b(servers, offered_erlangs)
    return servers * blocking / (servers - offered_erlangs * (1 - blocking))


# ---------------------------------------------------------------------------- delay systems


def mmc(arrival_per_s: float, service_per_s: float, servers: int) -> QueueMetrics:
    """M/M/c: Poisson arrivals at λ, exponential service at rate μ each, c servers, FIFO.

    ``a = λ/μ``, ``ρ = a/c``, ``P(wait) = C(c, a)``, ``Wq = C / (cμ − λ)``,
    ``W = Wq + 1/μ``, ``Lq = λ·Wq``, ``L = λ·W`` (GSTH §2.3; Little's law).
    Raises ValueError when ``ρ ≥ 1``.
    """
    _check_nonnegative("arrival_per_s", arrival_per_s)
    _check_positive("service_per_s", service_per_s)
    _check_servers(servers, 1)
    offered = arrival_per_s / service_per_s
    p_wait = erlang_c(servers, offered)
    wait_s = p_wait / (servers * service_per_s - arrival_per_s)
    return _delay_metrics(arrival_per_s, offered / servers, p_wait, wait_s, 1 / service_per_s)


def mm1(arrival_per_s: float, service_per_s: float) -> QueueMetrics:
    """M/M/1 = :func:`mmc` with one server: ``Wq = ρ/(μ − λ)``, ``W = 1/(μ − λ)``."""
    return mmc(arrival_per_s, service_per_s, 1)


def mg1(arrival_per_s: float, mean_service_s: float, service_cv: float) -> QueueMetrics:
    """M/G/1 by the Pollaczek–Khinchine mean-value formula (Kleinrock §5.7; GSTH §5.1).

    Service time S with mean ``E[S]`` and coefficient of variation ``cv = σ_S/E[S]``:
    ``ρ = λ·E[S]``, ``Wq = ρ·E[S]·(1 + cv²) / (2(1 − ρ))``, ``P(wait) = ρ`` (PASTA).
    ``cv = 1`` gives M/M/1, ``cv = 0`` M/D/1. Raises ValueError when ``ρ ≥ 1``.
    """
    _check_nonnegative("arrival_per_s", arrival_per_s)
    _check_positive("mean_service_s", mean_service_s)
    _check_nonnegative("service_cv", service_cv)
    rho = arrival_per_s * mean_service_s
    _check_stable(rho)
    wait_s = rho * mean_service_s * (1 + service_cv**2) / (2 * (1 - rho))
    return _delay_metrics(arrival_per_s, rho, rho, wait_s, mean_service_s)


def md1(arrival_per_s: float, service_s: float) -> QueueMetrics:
    """M/D/1: constant service ``service_s``; P-K with cv = 0, ``Wq = ρ·S / (2(1 − ρ))``.

    The wait is exactly half of M/M/1's at the same ρ and mean service time.
    """
    return mg1(arrival_per_s, service_s, 0.0)


def _delay_metrics(
    arrival_per_s: float, rho: float, p_wait: float, wait_s: float, service_s: float
) -> QueueMetrics:
    """Fill in W, Lq and L from Wq by Little's law (no arrival is lost)."""
    response_s = wait_s + service_s
    return QueueMetrics(
        rho=rho,
        p_wait=p_wait,
        mean_wait_s=wait_s,
        mean_response_s=response_s,
        mean_queue_len=arrival_per_s * wait_s,
        mean_in_system=arrival_per_s * response_s,
        throughput_per_s=float(arrival_per_s),
    )


# ---------------------------------------------------------------------------- loss systems


def mmcc(arrival_per_s: float, service_per_s: float, servers: int) -> QueueMetrics:
    """The Erlang loss system M/M/c/c (also M/G/c/c: only the mean service time counts).

    An arrival that finds all c servers busy is blocked, with probability
    ``B = erlang_b(c, λ/μ)``; nobody waits: ``Wq = Lq = 0``, ``W = 1/μ``,
    ``L = a·(1 − B)`` (the carried load), throughput ``λ·(1 − B)`` (GSTH §2.5).
    """
    _check_nonnegative("arrival_per_s", arrival_per_s)
    _check_positive("service_per_s", service_per_s)
    _check_servers(servers, 1)
    offered = arrival_per_s / service_per_s
    blocking = erlang_b(servers, offered)
    carried = offered * (1 - blocking)
    return QueueMetrics(
        rho=carried / servers,
        p_wait=0.0,
        mean_wait_s=0.0,
        mean_response_s=1 / service_per_s,
        mean_queue_len=0.0,
        mean_in_system=carried,
        throughput_per_s=arrival_per_s * (1 - blocking),
        p_block=blocking,
    )


def mm1k(arrival_per_s: float, service_per_s: float, capacity_k: int) -> QueueMetrics:
    """M/M/1/K: one exponential server, at most K in the system (K − 1 waiting).

    ``p_n ∝ ρ^n`` for n = 0..K with ``ρ = λ/μ`` (GSTH §2.4); an arrival finding K
    present is blocked (``p_block = p_K``, PASTA). The distribution is normalised
    in log space, so ρ = 1 (uniform ``p_n = 1/(K+1)``), ρ > 1 and large K need no
    special formulas. Means are over admitted arrivals, ``λ_eff = λ·(1 − p_K)``:
    ``W = L/λ_eff``, ``Wq = Lq/λ_eff``; utilisation ``1 − p_0 = λ_eff/μ``.
    """
    _check_nonnegative("arrival_per_s", arrival_per_s)
    _check_positive("service_per_s", service_per_s)
    _check_servers(capacity_k, 1)
    probs = _truncated_geometric(arrival_per_s / service_per_s, capacity_k)
    # Sums of the probabilities themselves, not 1 − p: no cancellation when p_0 or p_K → 1.
    admitted_share = math.fsum(probs[:-1])
    busy = math.fsum(probs[1:])
    in_system = math.fsum(n * p for n, p in enumerate(probs))
    queue_len = math.fsum((n - 1) * p for n, p in enumerate(probs) if n > 0)
    admitted_per_s = arrival_per_s * admitted_share
    if admitted_per_s == 0:  # no arrivals, or every one blocked: nobody is there to wait
        p_wait, wait_s, response_s = 0.0, 0.0, 1 / service_per_s
    else:
        p_wait = math.fsum(probs[1:-1]) / admitted_share
        wait_s, response_s = queue_len / admitted_per_s, in_system / admitted_per_s
    return QueueMetrics(
        rho=busy,
        p_wait=p_wait,
        mean_wait_s=wait_s,
        mean_response_s=response_s,
        mean_queue_len=queue_len,
        mean_in_system=in_system,
        throughput_per_s=admitted_per_s,
        p_block=probs[-1],
    )


def _truncated_geometric(rho: float, top: int) -> list[float]:
    """``p_n = ρ^n / Σ ρ^m`` for n = 0..top, without overflow for ρ > 1."""
    if rho == 0:
        return [1.0] + [0.0] * top
    log_rho = math.log(rho)
    peak = top * log_rho if log_rho > 0 else 0.0  # largest exponent → weight 1
    weights = [math.exp(n * log_rho - peak) for n in range(top + 1)]
    total = math.fsum(weights)
    return [w / total for w in weights]


# ---------------------------------------------------------------------------- Little's law


def littles_law_l(arrival_per_s: float, mean_time_s: float) -> float:
    """Little's law ``L = λ·W`` (Little 1961): mean number present from rate and mean time."""
    return arrival_per_s * mean_time_s


def littles_law_check(
    l_observed: float, arrival_per_s: float, w_observed: float, rel_tol: float = 0.05
) -> bool:
    """Whether an observed mean count agrees with ``λ·W`` within a relative tolerance.

    Use the admitted (carried) rate for λ when some arrivals are blocked.
    """
    _check_nonnegative("rel_tol", rel_tol)
    return math.isclose(l_observed, littles_law_l(arrival_per_s, w_observed), rel_tol=rel_tol)


# ---------------------------------------------------------------------------- scenarios


@dataclass(frozen=True, slots=True)
class TheoryPrediction:
    """What theory says about one scenario.

    Attributes:
        applies: the scenario is a classic case; ``model`` and ``metrics`` are set.
        reason: one line: which model and why (applies), or every reason it is not.
        model: ``"M/M/1"``, ``"M/M/c"``, ``"M/D/1"``, ``"M/G/1"``, ``"Erlang B"``
            or ``"M/M/1/K"``; ``""`` when theory does not apply.
        servers: c (for M/M/1/K: 1, and ``capacity`` is K).
        capacity: most sends in the store stage at once (loss systems; 0 = unbounded).
        arrival_per_s: λ, the offered send rate.
        mean_service_s: E[S], the mean store commit time.
        metrics: the steady-state means, or None.
        notes: extra remarks (e.g. the store being one server behind a larger pool).
    """

    applies: bool
    reason: str
    model: str = ""
    servers: int = 0
    capacity: int = 0
    arrival_per_s: float = 0.0
    mean_service_s: float = 0.0
    metrics: QueueMetrics | None = None
    notes: tuple[str, ...] = ()

    def summary_fields(self) -> dict[str, float]:
        """The predicted ``summary.csv`` columns theory can fill (``source = theory``).

        Ack latency is the response time W: with ``sim.cpu = false`` nothing but
        the store stage takes time. Raises ValueError when theory does not apply.
        """
        if self.metrics is None:
            raise ValueError(f"no theory for this scenario: {self.reason}")
        m = self.metrics
        return {
            "offered_per_s": self.arrival_per_s,
            "acked_per_s": m.throughput_per_s,
            "ack_mean_ms": m.mean_response_s * 1000.0,
            "error_rate": m.p_block,
        }


class _NotClassic(Exception):
    """Internal: the scenario is not a classic case; the message says why."""


def theory_for_scenario(scenario: Scenario) -> TheoryPrediction:
    """Recognise a classic queueing system in a scenario, from the file alone.

    Always returns a :class:`TheoryPrediction`; ``.applies`` is False when the
    scenario is not a classic case, and ``.reason`` then lists every obstacle.

    The mapping (the SimPy model implements these semantics):

    * arrivals: ``workload.arrival = "poisson"`` at ``λ = users × send_rate_per_user_per_s``;
    * nothing but the store takes time or turns sends away: ``sim.cpu = false`` (zero
      CPU costs), ``server.processes = 1`` (one pool), ``server.rate_limit.algorithm =
      "none"``, ``server.breaker.enabled = false``, ``server.store.batch_max = 1``
      (one send per commit), no faults, ``client.retry.max_attempts = 1``, and no
      timeout can fire within the run: ``client.ack_timeout_ms`` and
      ``server.store.call_timeout_s`` at least ``workload.duration_s``, and
      ``server.store.write_queue_max ≥ λ × duration_s`` (the write queue never fills);
    * service: the pool-connection holding time, mean ``sim.store_service_ms``, drawn
      from ``sim.store_service`` (``empirical`` is refused: its shape is not in the file);
    * ``server.store.max_in_flight_batches``: in a delay system at most that many sends
      hold connections (c is capped by it); a loss system needs it above the pool size;
    * servers: ``c = server.pool.size`` when ``sim.store_concurrency = 0`` (one commit
      per pool connection) or ≥ the pool size; otherwise the store runs
      ``store_concurrency`` commits at once and is that many servers (with 1 and a
      larger pool, the store is one server);
    * ``server.pool.acquire_timeout_ms = inf`` (or ≥ the run) → a delay system, wait =
      arrival to service start = ack latency − service time: exponential → M/M/1 or
      M/M/c; deterministic → M/D/1 (c = 1 only); lognormal with
      ``sim.store_service_cv`` → M/G/1 (c = 1 only);
    * ``acquire_timeout_ms = 0`` → a loss system, blocked sends fail with
      ``store_busy``: with c = pool size, Erlang B (any of the three distributions,
      by insensitivity); with one store server behind a pool of K > 1 connections
      and exponential service, M/M/1/K (a connection is held while waiting for the
      store);
    * anything else, or ``ρ ≥ 1`` in a delay system, → not a classic case.
    """
    obstacles = _obstacles(scenario)
    if obstacles:
        return TheoryPrediction(applies=False, reason="; ".join(obstacles))
    try:
        if scenario.server.pool.acquire_timeout_ms == 0:
            return _loss_system(scenario)
        return _delay_system(scenario)
    except _NotClassic as exc:
        return TheoryPrediction(applies=False, reason=str(exc))


def _obstacles(s: Scenario) -> list[str]:
    """Every reason, from the file alone, why the scenario is not a classic system."""
    w, srv, sim, client = s.workload, s.server, s.sim, s.client
    run_ms = w.duration_s * 1000.0
    acquire_ms = srv.pool.acquire_timeout_ms
    sends_in_run = s.offered_per_s * w.duration_s
    checks = [
        (w.arrival != "poisson", f"workload.arrival = {w.arrival!r}: theory needs 'poisson'"),
        (sim.cpu, "sim.cpu = true: the server CPU is a second queue; theory needs false"),
        (
            srv.processes != 1,
            f"server.processes = {srv.processes}: each process has its own pool; theory needs 1",
        ),
        (
            srv.rate_limit.algorithm != "none",
            f"server.rate_limit.algorithm = {srv.rate_limit.algorithm!r}: "
            "the limiter rejects sends; theory needs 'none'",
        ),
        (srv.breaker.enabled, "server.breaker.enabled = true: theory needs false"),
        (
            srv.store.batch_max != 1,
            f"server.store.batch_max = {srv.store.batch_max}: batches make the service "
            "time depend on the queue; theory needs 1",
        ),
        (_has_faults(srv.faults), "server.faults: injected faults; theory needs none"),
        (
            client.retry.max_attempts != 1,
            f"client.retry.max_attempts = {client.retry.max_attempts}: retries add "
            "arrivals; theory needs 1",
        ),
        (
            client.ack_timeout_ms < run_ms,
            f"client.ack_timeout_ms = {client.ack_timeout_ms:g}: sends can time out; "
            f"theory needs ≥ the run ({run_ms:g} ms)",
        ),
        (
            srv.store.call_timeout_s < w.duration_s,
            f"server.store.call_timeout_s = {srv.store.call_timeout_s:g}: commits can "
            f"time out; theory needs ≥ the run ({w.duration_s:g} s)",
        ),
        (
            srv.store.write_queue_max < sends_in_run,
            f"server.store.write_queue_max = {srv.store.write_queue_max}: the write queue "
            f"can fill; theory needs ≥ λ × duration_s ({sends_in_run:g})",
        ),
        (
            sim.store_service == "empirical",
            "sim.store_service = 'empirical': its shape is not in the scenario",
        ),
        (
            acquire_ms == 0 and srv.store.max_in_flight_batches <= srv.pool.size,
            f"server.store.max_in_flight_batches = {srv.store.max_in_flight_batches} ≤ "
            f"server.pool.size = {srv.pool.size}: sends wait in the write queue instead of "
            "being blocked at the pool; a loss system needs more batches in flight",
        ),
        (
            0 < acquire_ms < run_ms,
            f"server.pool.acquire_timeout_ms = {acquire_ms:g}: a finite wait is neither a "
            "delay system (inf) nor a loss system (0)",
        ),
    ]
    return [why for bad, why in checks if bad]


def _has_faults(faults: FaultsConfig) -> bool:
    return bool(
        faults.store_latency_ms
        or faults.store_error_rate
        or faults.cpu_burn_us_per_msg
        or faults.episodes
    )


def _store_servers(s: Scenario) -> tuple[int, tuple[str, ...]]:
    """Commits that can run at once, and a note when the store, not the pool, limits it."""
    pool = s.server.pool.size
    in_flight = s.server.store.max_in_flight_batches
    if in_flight < pool and s.server.pool.acquire_timeout_ms != 0:
        # with batch_max 1, at most max_in_flight_batches sends hold connections
        pool = in_flight
    store = s.sim.store_concurrency
    if store == 0 or store >= pool:
        return pool, ()
    noun = "one server" if store == 1 else f"{store} servers"
    note = (
        f"sim.store_concurrency = {store} < server.pool.size = {pool}: "
        f"the store runs {store} commit(s) at a time, so it is {noun}"
    )
    return store, (note,)


def _service(s: Scenario) -> tuple[str, float]:
    """Distribution name and mean service time in seconds."""
    return s.sim.store_service, s.sim.store_service_ms / 1000.0


def _delay_system(s: Scenario) -> TheoryPrediction:
    lam = s.offered_per_s
    servers, notes = _store_servers(s)
    dist, service_s = _service(s)
    if dist != "exponential" and servers > 1:
        raise _NotClassic(f"{dist} service with c = {servers} servers: no closed form here")
    try:
        if dist == "exponential":
            model = "M/M/1" if servers == 1 else "M/M/c"
            metrics = mmc(lam, 1 / service_s, servers)
        elif dist == "deterministic":
            model, metrics = "M/D/1", md1(lam, service_s)
        else:
            model, metrics = "M/G/1", mg1(lam, service_s, s.sim.store_service_cv)
    except ValueError as exc:
        raise _NotClassic(f"{exc} (λ = {lam:g}/s, c = {servers}, E[S] = {service_s:g} s)") from exc
    reason = (
        f"{model}: Poisson arrivals at {lam:g}/s, {dist} service of {service_s * 1000:g} ms "
        f"mean, c = {servers}, unlimited waiting; ρ = {metrics.rho:.4g}"
    )
    return TheoryPrediction(True, reason, model, servers, 0, lam, service_s, metrics, notes)


def _loss_system(s: Scenario) -> TheoryPrediction:
    lam = s.offered_per_s
    servers, notes = _store_servers(s)
    dist, service_s = _service(s)
    pool = s.server.pool.size
    if servers == pool:
        model, capacity = "Erlang B", pool
        metrics = mmcc(lam, 1 / service_s, servers)
        if dist != "exponential":
            notes += ("Erlang B depends on the service distribution only through its mean",)
    elif servers == 1 and dist == "exponential":
        model, capacity = "M/M/1/K", pool
        metrics = mm1k(lam, 1 / service_s, pool)
    else:
        raise _NotClassic(
            f"loss system with {servers} store server(s) behind {pool} connections "
            f"and {dist} service: M/M/c/K is not covered here"
        )
    reason = (
        f"{model}: Poisson arrivals at {lam:g}/s ({lam * service_s:g} Erlangs), {dist} "
        f"service of {service_s * 1000:g} ms mean, c = {servers}, at most {capacity} "
        f"in the store stage, blocked sends fail; P(block) = {metrics.p_block:.4g}"
    )
    return TheoryPrediction(True, reason, model, servers, capacity, lam, service_s, metrics, notes)
