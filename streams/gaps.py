"""Gaps in a partition's offsets: records never delivered, or records not there.

A batch should start at the offset after the last one the partition's state applied.
One that starts later means records were passed over on the way (seen: a restarted
worker's fetch passed over inside Faust while its read offset moved on) or are not in
the topic (a transactional producer's markers, records deleted by retention). The first
are read again; the second can only be told apart by reading again and meeting the same
gap, or, for records retention deleted, by the partition's log start having passed them
(which the consumer asks the broker before it waits or reads again). `judge` is the
decision, free of Kafka; the consumer acts on it for every batched topic
(streams/transport.py, `Consumer.follows_on`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# A gap is taken as real only after this many re-reads in a row showed it again: Faust has
# passed over a re-read too.
REREADS = 3


class Verdict(Enum):
    APPLY = "apply"  # the batch follows on: apply it
    REREAD = "reread"  # records missing before it: read the partition again from `expected`
    WAIT = "wait"  # fetched before a re-read already asked for: it comes again after it
    ACCEPT = "accept"  # the gap showed again after REREADS re-reads: nothing there, apply


@dataclass(frozen=True)
class Gap:
    expected: int  # the offset the state needs next
    first: int  # the first offset delivered instead
    rereads: int  # re-reads asked for so far


def judge(gap: Gap | None, expected: int, first: int) -> tuple[Verdict, Gap | None]:
    """What to do with a batch starting at `first` when the state needs `expected`, given
    the gap being read again (if any); and the gap to remember."""
    if first <= expected:
        return Verdict.APPLY, None
    same = gap is not None and gap.expected == expected
    if same and first > gap.first:
        return Verdict.WAIT, gap
    rereads = gap.rereads + 1 if same else 1
    if rereads > REREADS:
        return Verdict.ACCEPT, None
    return Verdict.REREAD, Gap(expected, first, rereads)
