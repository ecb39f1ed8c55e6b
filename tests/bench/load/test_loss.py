"""bench.load.loss: drops and duplicates are counted per receiver and room, in bounded memory."""

from bench.load.loss import REPORT_KEYS, LossLedger, ReceiverLog, merge_reports


def deliver(ledger: LossLedger, receiver: str, room: str, seqs: range | list[int]) -> None:
    for seq in seqs:
        ledger.record_delivered(receiver, room, seq)


def test_a_dropped_and_a_duplicated_delivery_are_counted() -> None:
    ledger = LossLedger()
    for i in range(1, 11):
        ledger.record_sent(f"c{i}")
        ledger.record_acked("lobby", i, f"c{i}")
    deliver(ledger, "ann", "lobby", range(1, 11))
    deliver(ledger, "bob", "lobby", [1, 2, 3, 5, 6, 6, 7, 8, 9, 10])  # 4 lost, 6 twice

    report = ledger.report()
    assert report["sent"] == report["acked"] == 10
    assert report["delivered"] == 20
    assert report["missing"] == 1
    assert report["duplicated"] == 1
    assert report["receivers"] == 2
    assert report["unacked"] == 0


def test_only_seqs_between_first_and_last_seen_can_be_missing() -> None:
    ledger = LossLedger()
    deliver(ledger, "late", "lobby", range(40, 46))  # joined after seq 39 was sent
    assert ledger.report()["missing"] == 0
    assert ledger.last_seq("late", "lobby") == 45
    assert ledger.last_seq("late", "elsewhere") == 0


def test_a_late_seq_fills_its_gap_instead_of_counting_as_missing() -> None:
    log = ReceiverLog()
    for seq in (1, 2, 5, 3, 4, 6):
        assert log.add(seq)
    assert log.ranges == [(1, 6)]
    assert log.missing == 0 and log.duplicated == 0
    assert not log.add(4)
    assert log.duplicated == 1


def test_rooms_and_receivers_are_kept_apart() -> None:
    ledger = LossLedger()
    deliver(ledger, "ann", "a", [1, 2])
    deliver(ledger, "ann", "b", [1, 2])  # same seqs, other room: not duplicates
    deliver(ledger, "bob", "a", [1, 3])
    report = ledger.report()
    assert report["duplicated"] == 0
    assert report["missing"] == 1


def test_memory_is_bounded_by_sealing_the_oldest_gaps() -> None:
    log = ReceiverLog(max_ranges=4)
    for seq in range(1, 2001, 2):  # every other seq lost: 999 gaps
        log.add(seq)
    assert len(log.ranges) == 4
    assert log.missing == 999
    assert log.received == 1000
    assert not log.add(2)  # inside a sealed gap: already counted, not received again


def test_retries_acks_and_failures() -> None:
    ledger = LossLedger()
    ledger.record_sent("c1")
    ledger.record_sent("c1")  # a retry: same client_msg_id
    ledger.record_sent("c2")
    ledger.record_sent("c3")
    assert ledger.record_acked("lobby", 1, "c1")
    assert not ledger.record_acked("lobby", 1, "c1")  # the retry's own (deduplicated) ack
    ledger.record_failed("c2")
    report = ledger.report()
    assert (report["sent"], report["retries"], report["acked"]) == (3, 1, 1)
    assert (report["failed"], report["unacked"]) == (1, 1)


def test_reports_of_several_processes_add_up() -> None:
    a, b = LossLedger(), LossLedger()
    deliver(a, "ann", "r0-0", [1, 3])
    deliver(b, "bob", "r1-0", [1, 1])
    total = merge_reports([a.report(), b.report()])
    assert set(total) == set(REPORT_KEYS)
    assert (total["delivered"], total["missing"], total["duplicated"]) == (4, 1, 1)
    assert total["receivers"] == 2


def test_a_senders_own_acked_seqs_close_its_gaps_without_counting_as_deliveries() -> None:
    ledger = LossLedger()
    deliver(ledger, "ann", "lobby", [1, 2, 4, 5])
    ledger.record_own("ann", "lobby", 3)  # ann sent seq 3: acked, not delivered back
    ledger.record_own("ann", "lobby", 3)  # the Ack of a retry of it: not a duplicate
    report = ledger.report()
    assert (report["delivered"], report["missing"], report["duplicated"]) == (4, 0, 0)
