"""When the agents snapshot a partition, and where the group may commit it
(streams/snapshots.py), without a broker: a busy partition is snapshotted now and then,
a quiet one at once, and a commit never passes a snapshot the table does not have."""

from __future__ import annotations

from streams.snapshots import Snapshots
from streams.state import Snapshot, chunk_writes

AGE_S = 120.0


def snapshot(partition: int, offset: int, previous: Snapshot | None, size: int = 100) -> Snapshot:
    meta, _ = chunk_writes(partition, [b"x" * size], offset, previous)
    return meta


def test_a_busy_partition_waits_for_quiet_for_its_age_or_for_input_a_multiple_of_its_snapshot() -> None:
    snaps = Snapshots(AGE_S, input_ratio=4.0)
    snaps.loaded(0, None, now=0.0)
    snaps.loaded(1, snapshot(1, 9, None), now=0.0)
    assert snaps.due(force=False, now=1.0) == []  # nothing applied: nothing to store
    snaps.applied(0, 10)
    snaps.applied(1, 10)
    # Partition 0 has no snapshot yet: any input is worth one. Partition 1 is busy.
    assert snaps.due(force=False, now=1.0) == [0]
    snaps.taken(0, snapshot(0, 3, None), now=1.0)
    snaps.applied(1, 390)
    assert snaps.due(force=False, now=2.0) == [1]  # 400 bytes of input, 4 × its 100-byte snapshot
    snaps.taken(1, snapshot(1, 20, snaps.newest(1)), now=2.0)
    snaps.applied(1, 10)
    assert snaps.due(force=False, now=3.0) == []  # still busy
    assert snaps.due(force=False, now=4.0) == [1]  # gone quiet: nothing since the last flush
    snaps.taken(1, snapshot(1, 21, snaps.newest(1)), now=4.0)
    snaps.applied(1, 10)
    assert snaps.due(force=False, now=4.0 + AGE_S) == [1]  # busy, but its snapshot is old


def test_without_an_input_ratio_a_busy_partition_is_stored_quiet_or_old() -> None:
    snaps = Snapshots(AGE_S)
    snaps.loaded(0, snapshot(0, 5, None, size=1), now=0.0)
    snaps.applied(0)
    assert snaps.due(force=False, now=0.0) == []
    snaps.applied(0, 10**9)
    assert snaps.due(force=False, now=AGE_S - 1) == []
    snaps.applied(0)
    assert snaps.due(force=False, now=AGE_S) == [0]


def test_force_stores_every_partition_that_changed_and_no_other() -> None:
    snaps = Snapshots(AGE_S, input_ratio=4.0)
    for p in range(3):
        snaps.loaded(p, snapshot(p, 100, None), now=0.0)
    snaps.applied(0)
    snaps.applied(2)
    assert snaps.due(force=True, now=0.0) == [0, 2]


def test_a_snapshot_goes_into_the_other_buffer_than_the_newest_taken() -> None:
    snaps = Snapshots(AGE_S)
    snaps.loaded(0, None, now=0.0)
    first = snapshot(0, 1, snaps.newest(0))
    snaps.taken(0, first, now=0.0)
    second = snapshot(0, 2, snaps.newest(0))
    assert (first.buffer, second.buffer) == ("a", "b")


def test_the_commit_ceiling_follows_stored_snapshots_only_and_never_goes_back() -> None:
    snaps = Snapshots(AGE_S)
    snaps.loaded(0, snapshot(0, 41, None), now=0.0)
    snaps.loaded(1, None, now=0.0)
    assert snaps.ceilings == {0: 42}  # where a loaded partition's reading goes on
    snaps.applied(0)
    older = snapshot(0, 50, snaps.newest(0))
    snaps.taken(0, older, now=1.0)
    assert snaps.ceilings == {0: 42}  # taken, not yet in the changelog
    newer = snapshot(0, 60, older)
    snaps.taken(0, newer, now=2.0)
    snaps.stored({0: newer})  # a second flush saw its snapshot stored first
    snaps.stored({0: older})
    assert snaps.ceilings == {0: 61}


def test_revoked_partitions_are_forgotten_until_loaded_again() -> None:
    snaps = Snapshots(AGE_S)
    snaps.loaded(0, None, now=0.0)
    snaps.applied(0)
    snaps.forget()
    assert snaps.due(force=True, now=1.0) == []
    snaps.loaded(0, snapshot(0, 7, None), now=1.0)
    assert snaps.newest(0) is not None and snaps.ceilings[0] == 8


def test_staggered_partitions_taken_on_together_come_due_spread_over_the_age() -> None:
    snaps = Snapshots(AGE_S, stagger=True)
    for p in range(8):
        snaps.loaded(p, snapshot(p, 9, None), now=0.0)
    came_due: dict[int, float] = {}
    for tick in range(1, 121):
        now = tick * AGE_S / 120
        for p in range(8):
            if p not in came_due:
                snaps.applied(p, 10)  # busy all along
        for p in snaps.due(force=False, now=now):
            came_due.setdefault(p, now)
            snaps.taken(p, snapshot(p, 10 + tick, snaps.newest(p)), now=now)
    assert sorted(came_due) == list(range(8))
    times = sorted(came_due.values())
    assert all(b - a >= AGE_S / 16 for a, b in zip(times, times[1:]))  # no two in one burst


def test_with_quiet_s_a_partition_fed_every_second_is_not_stored_at_every_flush_between_records() -> None:
    snaps = Snapshots(AGE_S, quiet_s=20.0)
    snaps.loaded(0, snapshot(0, 9, None), now=0.0)
    stored = []
    for tick in range(1, 200):  # a flush every 0.5 s, a record every second
        now = tick * 0.5
        if tick % 2 == 0 and now <= 60:
            snaps.applied(0, 10, now=now)
        for p in snaps.due(force=False, now=now):
            stored.append(now)
            snaps.taken(p, snapshot(p, 10 + tick, snaps.newest(p)), now=now)
    assert stored == [80.0]  # 20 s after the last record, not between the records
