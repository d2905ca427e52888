"""The partition watchdog: a partition this worker owns, with records to read, that has
not moved on for STALL_S is stalled (a source partition moves on by the offset Faust has
handed to its streams, a changelog being recovered by its fetch position), once it has
been found behind its end at two checks in a row. It is logged with what Faust and
aiokafka hold for it (streams/transport.py), counted, and read again from its commit.

`Watch` is the judgement, pure; `install` runs it on a Faust timer in the worker. End
offsets are asked of the broker only for partitions that have not moved for STALL_S, so
a busy worker costs the broker nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Generic, Hashable, Mapping, Optional, TypeVar

import faust

from streams.watermarks import end_offsets

log = logging.getLogger(__name__)

CHECK_S = 5.0
STALL_S = 10.0

K = TypeVar("K", bound=Hashable)


class Watch(Generic[K]):
    """Remembers since when each partition has been where it is."""

    def __init__(self, stall_s: float = STALL_S) -> None:
        self.stall_s = stall_s
        self._since: dict[K, tuple[Optional[int], float]] = {}
        # Found behind their end at the last check, at the position they still hold. The end
        # is asked after the position was read (the probe, a client of its own, takes 0.1-0.3
        # s), so it counts records that reached the broker meanwhile, which the agent takes
        # within milliseconds: the last record of a quiet partition was reported as stalled 75
        # times in a two-hour soak on Kafka, and read again, handed to its agent a second time
        # (traced: each one taken 4-286 ms before its warning). Behind at two checks in a row,
        # CHECK_S apart, is records not taken for that long.
        self._behind: set[K] = set()

    def unmoved(self, now: float, reached: Mapping[K, Optional[int]]) -> list[K]:
        """The partitions of `reached` (how far each has got; None: nowhere yet) that have
        not moved for stall_s. Partitions no longer in it are forgotten."""
        for key, position in reached.items():
            seen = self._since.get(key)
            if seen is None or seen[0] != position:
                self._since[key] = (position, now)
                self._behind.discard(key)
        for gone in self._since.keys() - reached.keys():
            del self._since[gone]
            self._behind.discard(gone)
        return [key for key, (_, since) in self._since.items() if now - since >= self.stall_s]

    def stalled(self, now: float, unmoved: list[K], ends: Mapping[K, int]) -> list[K]:
        """Those of `unmoved` with records past where they are that were there at the check
        before too (`_behind`); one found behind for the first time is judged again at the
        next check. The others are judged afresh from now, so a recovery has stall_s to
        work and an idle partition is asked about once per stall_s."""
        out = []
        for key in unmoved:
            position = self._since[key][0]
            behind = ends.get(key, 0) > (position or 0)
            if behind and key not in self._behind:
                self._behind.add(key)  # judged again at the next check
                continue
            if behind:
                out.append(key)
            self._behind.discard(key)
            self._since[key] = (position, now)
        return out

    def reset(self) -> None:
        """A rebalance moves partitions: nothing measured before it counts."""
        self._since.clear()
        self._behind.clear()


def install(app: faust.App, bootstrap: str, on_stall: Callable[[str, int], None] = lambda t, p: None) -> None:
    """Check the app's partitions every CHECK_S; `on_stall(topic, partition)` counts a stall."""
    watch: Watch = Watch()
    unanswered = 0  # checks in a row the broker did not answer

    @app.timer(CHECK_S)
    async def watchdog() -> None:
        nonlocal unanswered
        consumer = app.consumer
        reached = consumer.progress()
        if not reached:
            watch.reset()
            return
        unmoved = watch.unmoved(time.monotonic(), reached)
        if not unmoved:
            return
        try:
            ends = await end_offsets(bootstrap, unmoved)
        except Exception as exc:  # noqa: BLE001 - the broker is away; the next check asks again
            # Once per spell, not every check: a stall goes unseen while this lasts.
            (log.debug if unanswered else log.warning)(
                "watchdog: no end offsets (%s); stalls go unseen until the broker answers", exc)
            unanswered += 1
            return
        if unanswered:
            log.info("watchdog: end offsets again after %d unanswered checks", unanswered)
            unanswered = 0
        stalled = watch.stalled(time.monotonic(), unmoved, ends)
        if stalled:
            await consumer.refresh_leaders()  # once per check, not once per stalled partition
        for tp in stalled:
            log.warning("partition %s[%d] stalled at %s of %d for %gs, reading it again from its commit; %s",
                        tp.topic, tp.partition, reached[tp], ends[tp], watch.stall_s, consumer.fetch_state(tp))
            on_stall(tp.topic, tp.partition)
            await consumer.restart_fetch(tp)
