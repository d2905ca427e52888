"""The partition watchdog's judgement (streams/watchdog.py), without a broker. The worker
runs it against real partitions in tests/test_scale_in_stress.py (`make stress-scale-in`)."""

from __future__ import annotations

from streams.watchdog import Watch


def test_a_partition_with_records_that_does_not_move_is_stalled_once_per_stall_time() -> None:
    watch: Watch[str] = Watch(stall_s=20)
    ends = {"moving": 100, "idle": 50, "stuck": 80, "unread": 30}
    assert watch.unmoved(0, {"moving": 10, "idle": 50, "stuck": 40, "unread": None}) == []
    assert watch.unmoved(19, {"moving": 20, "idle": 50, "stuck": 40, "unread": None}) == []
    unmoved = watch.unmoved(20, {"moving": 30, "idle": 50, "stuck": 40, "unread": None})
    assert sorted(unmoved) == ["idle", "stuck", "unread"]  # only these need end offsets
    # Caught up (idle) is not stalled; behind its end is, once it still is at the next check.
    assert watch.stalled(20, unmoved, ends) == []
    unmoved = watch.unmoved(25, {"moving": 35, "idle": 50, "stuck": 40, "unread": None})
    assert sorted(unmoved) == ["stuck", "unread"]  # idle is asked about again at 40
    # A partition never read (None) with records is stalled too.
    assert sorted(watch.stalled(25, unmoved, ends)) == ["stuck", "unread"]
    # Reported, then judged afresh: a recovery has a stall time to work.
    assert watch.unmoved(35, {"moving": 40, "idle": 50, "stuck": 40, "unread": 0}) == []
    unmoved = watch.unmoved(45, {"moving": 50, "idle": 50, "stuck": 40, "unread": 0})
    assert sorted(unmoved) == ["idle", "stuck"]
    assert watch.stalled(45, unmoved, ends) == []
    assert watch.stalled(50, watch.unmoved(50, {"moving": 55, "idle": 50, "stuck": 40, "unread": 0}), ends) == [
        "stuck"]


def test_a_record_that_arrives_while_the_end_is_asked_is_no_stall() -> None:
    # The end is asked after the position was read: it counts the newest record of a quiet
    # partition, which the agent takes milliseconds later.
    watch: Watch[str] = Watch(stall_s=10)
    watch.unmoved(0, {"quiet": 5})
    unmoved = watch.unmoved(10, {"quiet": 5})
    assert watch.stalled(10, unmoved, {"quiet": 6}) == []
    assert watch.unmoved(15, {"quiet": 6}) == []  # it was taken: judged from now
    unmoved = watch.unmoved(25, {"quiet": 6})
    assert watch.stalled(25, unmoved, {"quiet": 7}) == []  # again, and not taken this time
    assert watch.stalled(30, watch.unmoved(30, {"quiet": 6}), {"quiet": 7}) == ["quiet"]


def test_partitions_that_left_and_a_rebalance_are_forgotten() -> None:
    watch: Watch[str] = Watch(stall_s=20)
    watch.unmoved(0, {"a": 1, "b": 1})
    watch.unmoved(10, {"a": 1})  # b moved to another worker
    assert watch.unmoved(25, {"a": 1, "b": 1}) == ["a"]  # b is back: judged from now
    watch.reset()
    assert watch.unmoved(50, {"a": 1}) == []
