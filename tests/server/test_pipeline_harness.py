"""The scripted harness of the server's Send path (tests/server/support_pipeline.py)."""

from __future__ import annotations

from tests.server.support_pipeline import Commit, Outcome, run_pipeline

NO_LIMIT = {"server.rate_limit.algorithm": "none"}


def test_a_send_is_delivered_to_the_other_members_before_its_ack() -> None:
    run = run_pipeline([(1.0, "ann", "c1", "r")], members={"r": ("ann", "bob", "cy")})
    assert run.outcomes == [Outcome(at_s=1.0, kind="ack", seq=1)]
    kinds = [(f.user, f.kind) for f in run.wire]
    assert sorted(kinds[:2]) == [("bob", "deliver"), ("cy", "deliver")]
    assert kinds[2:] == [("ann", "ack")]


def test_a_slow_commit_is_answered_when_it_returns_on_the_virtual_clock() -> None:
    run = run_pipeline([(0.0, "ann", "c1", "r")], [Commit(delay_s=0.25)])
    outcome = run.outcomes[0]
    assert outcome is not None and outcome.kind == "ack"
    assert abs(outcome.at_s - 0.25) < 1e-9


def test_a_failed_commit_answers_internal_and_its_retry_is_stored() -> None:
    run = run_pipeline([(0.0, "ann", "c1", "r"), (1.0, "ann", "c1", "r")], [Commit(fails=True)])
    first, retry = run.outcomes
    assert first is not None and (first.kind, first.code) == ("error", "internal")
    assert retry == Outcome(at_s=1.0, kind="ack", seq=1)
    assert [m.client_msg_id for m in run.store.rows["r"]] == ["c1"]


def test_a_retry_while_in_flight_joins_the_first_attempt() -> None:
    run = run_pipeline(
        [(0.0, "ann", "c1", "r"), (0.1, "ann", "c1", "r"), (2.0, "ann", "c1", "r")],
        [Commit(delay_s=0.5)],
        overrides=NO_LIMIT,
    )
    assert run.outcomes == [
        Outcome(at_s=0.5, kind="ack", seq=1),
        Outcome(at_s=0.5, kind="ack", seq=1, duplicate=True),
        Outcome(at_s=2.0, kind="ack", seq=1, duplicate=True),  # stored: answered at once
    ]
    assert run.store.batches == 1


def test_a_commit_over_the_call_deadline_fails_but_is_stored() -> None:
    run = run_pipeline(
        [(0.0, "ann", "c1", "r"), (30.0, "ann", "c1", "r")],
        [Commit(delay_s=20.0)],
        overrides={"server.store.call_timeout_s": 2.0},
    )
    first, retry = run.outcomes
    assert first is not None and (first.kind, first.code, first.at_s) == ("error", "internal", 2.0)
    assert retry is not None and (retry.kind, retry.seq) == ("ack", 1)


def test_a_send_over_the_rate_is_refused_and_the_connection_held_back() -> None:
    limit = {"server.rate_limit.rate_per_s": 10.0, "server.rate_limit.burst": 1}
    run = run_pipeline(
        [(0.0, "ann", "c1", "r"), (0.0, "ann", "c2", "r"), (0.01, "ann", "c3", "r")],
        overrides=limit,
    )
    first, refused, held = run.outcomes
    assert first is not None and first.kind == "ack"
    assert refused == Outcome(at_s=0.0, kind="error", code="rate_limited", retry_after_ms=100)
    # c3 arrived during the hold: read only once the token is back, then accepted
    assert run.handled_at_s[2] is not None and abs(run.handled_at_s[2] - 0.1) < 1e-9
    assert held is not None and (held.kind, held.seq) == ("ack", 2)
