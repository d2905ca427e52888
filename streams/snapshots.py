"""Which of a worker's partitions to snapshot, and where the group may commit each.

Both stateful agents, the domain agents (streams/agents.py) and the forecast agent
(streams/forecast_agent.py), store a partition's state as a snapshot (streams/state.py's
layout) before an offset commit when it is worth it, and the group commits the source
partition no further than its newest stored snapshot covers (`commit_ceilings` in
streams/transport.py), so that a crash replays the records after it. `Snapshots` is that
bookkeeping, without Faust or a broker: per partition its newest snapshot, when it was
taken and what was applied since; and per partition the commit ceiling. The agent's
flush asks which partitions are `due`, writes their snapshots into its table, says each
one `taken`, and, once the table's changelog has them, `stored`.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.state import Snapshot


@dataclass
class _Since:
    """A partition's newest snapshot, and what happened since."""

    snapshot: Snapshot | None
    taken_at: float  # time.monotonic()
    input_bytes: int = 0  # record bytes applied since the snapshot
    changed: bool = False  # records applied since the snapshot
    stepped: bool = False  # records applied since the last flush
    applied_at: float = 0.0  # time.monotonic() of the last records applied


class Snapshots:
    """A partition that changed is snapshotted when it has gone quiet (nothing applied
    since the last flush), `max_age_s` after its last snapshot, once the input since then
    is `input_ratio` times that snapshot's size (when given), and when `force`d."""

    def __init__(self, max_age_s: float, input_ratio: float | None = None, stagger: bool = False,
                 quiet_s: float | None = None) -> None:
        """`stagger`: partitions taken on together come due at different times, spread
        over `max_age_s`, rather than all at once (a large state's round). `quiet_s`: a
        partition is quiet once nothing was applied to it for that long, not merely since
        the last flush (a source with a record every second or so looks quiet between
        them at every flush)."""
        self.max_age_s, self.input_ratio, self.stagger, self.quiet_s = max_age_s, input_ratio, stagger, quiet_s
        self._since: dict[int, _Since] = {}
        self.ceilings: dict[int, int] = {}  # partition → the offset its newest snapshot covers + 1

    def loaded(self, partition: int, snapshot: Snapshot | None, now: float) -> None:
        """A partition taken on, with its newest stored snapshot (None: none yet)."""
        # The golden ratio's fraction spreads any run of partition numbers evenly.
        ahead = self.max_age_s * (partition * 0.6180339887 % 1.0) if self.stagger else 0.0
        self._since[partition] = _Since(snapshot, now - ahead)
        if snapshot is not None:
            self.ceilings[partition] = snapshot.offset + 1

    def applied(self, partition: int, input_bytes: int = 0, now: float = 0.0) -> None:
        """Records (of `input_bytes`) applied to the partition's state at `now`."""
        since = self._since[partition]
        since.input_bytes += input_bytes
        since.changed = since.stepped = True
        since.applied_at = now

    def due(self, force: bool, now: float) -> list[int]:
        """The partitions to snapshot at this flush (every changed one when `force`d).
        Asked once per flush: it is what tells a busy partition from a quiet one."""
        out = [p for p, since in self._since.items() if since.changed and (force or self._worth_it(since, now))]
        for since in self._since.values():
            since.stepped = False
        return out

    def _worth_it(self, since: _Since, now: float) -> bool:
        quiet = not since.stepped if self.quiet_s is None else now - since.applied_at >= self.quiet_s
        if quiet or now - since.taken_at >= self.max_age_s:
            return True
        size = since.snapshot.size if since.snapshot else 0
        return self.input_ratio is not None and since.input_bytes >= self.input_ratio * size

    def newest(self, partition: int) -> Snapshot | None:
        """The partition's newest snapshot, stored or on its way: the next goes into the
        other buffer."""
        return self._since[partition].snapshot

    def taken(self, partition: int, snapshot: Snapshot, now: float) -> None:
        """The partition's snapshot is written to the table (not yet stored)."""
        self._since[partition] = _Since(snapshot, now)

    def stored(self, snapshots: dict[int, Snapshot]) -> None:
        """The table's changelog has these snapshots: the group may commit up to them.
        Only what one flush saw stored moves a ceiling, and never back: a flush running
        beside it may have taken a newer snapshot that is still on its way."""
        for p, snapshot in snapshots.items():
            self.ceilings[p] = max(self.ceilings.get(p, 0), snapshot.offset + 1)

    def forget(self) -> None:
        """Partitions revoked (after a forced flush): whoever owns each next loads it."""
        self._since.clear()
