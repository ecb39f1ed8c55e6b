"""The scenario file: shipped files load; bad files give one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatcap.scenario import (
    Scenario,
    ScenarioError,
    load_scenario,
    load_scenario_data,
    reference_markdown,
    to_toml,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "scenarios").glob("*.toml"))


def test_the_four_required_scenarios_are_shipped() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"smoke", "baseline", "store-outage", "retry-storm"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_scenario_loads_and_round_trips_through_its_printout(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    again_path = path.parent / "_unused"
    del again_path
    reprinted = to_toml(scenario)
    import tomllib

    again = load_scenario_data(tomllib.loads(reprinted), source="<reprint>")
    assert again == scenario


def test_defaults_follow_the_anchors() -> None:
    s = Scenario()
    b = s.server.breaker
    # Resilience4j CircuitBreakerConfig defaults
    assert (b.window_type, b.window_size, b.minimum_calls) == ("count", 100, 100)
    assert (b.failure_rate_pct, b.slow_call_rate_pct) == (50.0, 100.0)
    assert (b.slow_call_duration_s, b.open_duration_s, b.half_open_calls) == (60.0, 60.0, 10)
    assert b.max_half_open_wait_s == 0.0
    # HikariCP defaults
    p = s.server.pool
    assert (p.size, p.min_idle, p.acquire_timeout_ms) == (10, None, 30_000.0)
    assert (p.idle_timeout_s, p.max_lifetime_s, p.leak_detection_ms) == (600.0, 1800.0, 0.0)
    # Finagle RetryBudget defaults
    rb = s.client.retry_budget
    assert (rb.ratio, rb.min_retries_per_s, rb.window_s) == (0.2, 10.0, 10.0)


def test_store_outage_has_an_episode_that_fails_every_commit() -> None:
    s = load_scenario(ROOT / "scenarios" / "store-outage.toml")
    (episode,) = s.server.faults.episodes
    assert episode.store_error_rate == 1.0
    assert episode.start_s > s.workload.warmup_s
    assert episode.start_s + episode.duration_s < s.workload.duration_s
    assert s.server.breaker.enabled


def test_retry_storm_retries_without_jitter_or_budget() -> None:
    s = load_scenario(ROOT / "scenarios" / "retry-storm.toml")
    assert s.client.retry.jitter == "none"
    assert s.client.retry_budget.kind == "none"
    assert s.client.retry.max_attempts > 4


BAD = [
    (
        "[server]\nmax_conections_per_ip = 5\n",
        "unknown key server.max_conections_per_ip — did you mean 'max_connections_per_ip'?",
    ),
    ("[server.pool]\nsize = 0\n", "server.pool.size = 0: must be ≥ 1 and ≤ 1000"),
    ("[server.pool]\nsize = 'ten'\n", "server.pool.size = 'ten': must be an integer"),
    ("[server.pool]\nsize = 2.5\n", "server.pool.size = 2.5: must be an integer"),
    (
        "[server.pool]\nacquire_timeout_ms = -1\n",
        "server.pool.acquire_timeout_ms = -1: must be ≥ 0",
    ),
    (
        "[server.rate_limit]\nalgorithm = 'gcra'\n",
        "server.rate_limit.algorithm = 'gcra': must be one of token_bucket",
    ),
    (
        "[server.breaker]\nfailure_rate_pct = 150\n",
        "server.breaker.failure_rate_pct = 150: must be > 0 and ≤ 100",
    ),
    ("[server.breaker]\nwindow_type = 'sliding'\n", "must be one of count, time"),
    ("[server.breaker]\nenabled = 1\n", "server.breaker.enabled = 1: must be true or false"),
    ("[server.store]\nsynchronous = 'normal'\n", "must be one of OFF, NORMAL, FULL, EXTRA"),
    (
        "[[server.faults.episodes]]\nstore_error_rate = 2\n",
        "server.faults.episodes[0].store_error_rate = 2: must be ≥ 0 and ≤ 1",
    ),
    ("[server.faults]\nepisodes = 3\n", "server.faults.episodes must be an array of tables"),
    ("server = 5\n", "[server] must be a table, got 5"),
    ("[workload]\nusers = true\n", "workload.users = true: must be an integer"),
    ("[workload]\nsend_rate_per_user_per_s = nan\n", "must be a number"),
    ("[workload]\narrival = 'bursty'\n", "must be one of poisson, constant, closed"),
    (
        "[workload]\ncodec_mix = { json = 1, xml = 1 }\n",
        "workload.codec_mix.xml: unknown codec (allowed: json, protobuf)",
    ),
    ("[workload]\ncodec_mix = { json = 0 }\n", "weights must not all be 0"),
    ("[workload]\ncodec_mix = { json = -1 }\n", "must be a weight ≥ 0"),
    (
        "[workload]\nduration_s = 10\nwarmup_s = 10\n",
        "workload.warmup_s = 10: must be less than workload.duration_s (10)",
    ),
    (
        "[workload]\nusers = 3\n[workload.room_size]\nsize = 5\n",
        "workload.room_size.size = 5: must be ≤ workload.users (3)",
    ),
    (
        "[workload.room_size]\ndistribution = 'uniform'\nmin = 9\nmax = 4\n",
        "workload.room_size.min = 9: must be ≤ workload.room_size.max (4)",
    ),
    (
        "[workload]\nbody_bytes = 70000\n",
        "workload.body_bytes = 70000: must be ≤ server.max_message_bytes − 512",
    ),
    (
        "[server.pool]\nsize = 4\nmin_idle = 5\n",
        "server.pool.min_idle = 5: must be ≤ server.pool.size (4)",
    ),
    ("[client.retry]\nbase_ms = 500\ncap_ms = 100\n", "client.retry.base_ms = 500: must be ≤"),
    ("[client.retry]\njitter = 'random'\n", "must be one of"),
    ("[client.retry_budget]\nkind = 'leaky'\n", "client.retry_budget.kind = 'leaky'"),
    (
        "[server]\norigins = 'https://a.example'\n",
        "server.origins = 'https://a.example': must be a list",
    ),
    (
        "[server]\norigins = ['*', 'https://a.example/']\n",
        "server.origins[1] = 'https://a.example/': must be '*' or an origin",
    ),
    ("[server]\norigins = ['a.example']\n", "server.origins[0] = 'a.example': must be"),
    ("[server]\norigins = ['http://h:99999']\n", "port must be in 1..65535"),
    (
        "[server.tls]\ncert_file = 'c.pem'\n",
        "server.tls.cert_file = 'c.pem': needs server.tls.key_file too (both or neither)",
    ),
    ("[server.tls]\nkey_file = 'k.pem'\n", "needs server.tls.cert_file too"),
    ("seed = -1\n", "seed = -1: must be ≥ 0"),
    ("[server\n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[e[:40] for _, e in BAD])
def test_a_bad_file_gives_one_error_naming_file_key_value_and_rule(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(str(path) + ": ")
    assert expected in message
    assert "\n" not in message


def test_a_missing_file_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.toml")


def test_a_non_utf8_file_is_a_scenario_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"name = '\xe9'\n")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_scenario(path)


def test_overrides_are_validated_like_the_file() -> None:
    s = Scenario()
    assert s.with_overrides({"server.pool.size": 4}).server.pool.size == 4
    with pytest.raises(ScenarioError, match=r"server\.pool\.size = 0"):
        s.with_overrides({"server.pool.size": 0})
    with pytest.raises(ScenarioError, match="unknown key 'sise'"):
        s.with_overrides({"server.pool.sise": 4})


def test_fields_are_frozen() -> None:
    s = Scenario()
    with pytest.raises(AttributeError):
        s.seed = 3  # type: ignore[misc]


def test_offered_load_is_users_times_rate() -> None:
    s = load_scenario(ROOT / "scenarios" / "baseline.toml")
    assert s.offered_per_s == pytest.approx(200.0)


def test_scenarios_readme_documents_every_key_with_its_default() -> None:
    text = (ROOT / "scenarios" / "README.md").read_text()
    assert reference_markdown() in text, "run: python -m bench scenario-reference > …"
