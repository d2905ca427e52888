"""Gaps in a partition's offsets (streams/gaps.py): records passed over on the way are
read again, records not in the topic are gone past after a few re-reads showed so."""

from streams.gaps import REREADS, Gap, Verdict, judge


def test_a_batch_that_follows_on_is_applied() -> None:
    assert judge(None, 100, 100) == (Verdict.APPLY, None)
    assert judge(None, 100, 40) == (Verdict.APPLY, None)  # a re-delivery: the step skips what it has
    assert judge(Gap(100, 900, 1), 100, 100) == (Verdict.APPLY, None)  # the re-read came


def test_records_passed_over_are_read_again_and_later_batches_wait_for_them() -> None:
    verdict, gap = judge(None, 100, 900)
    assert (verdict, gap) == (Verdict.REREAD, Gap(100, 900, 1))
    assert judge(gap, 100, 1500) == (Verdict.WAIT, gap)  # fetched before the re-read
    # The re-read itself passed over again: asked again, not taken as a real gap.
    assert judge(gap, 100, 900) == (Verdict.REREAD, Gap(100, 900, 2))


def test_a_gap_that_re_reads_keep_showing_is_real() -> None:
    gap = None
    for n in range(1, REREADS + 1):
        verdict, gap = judge(gap, 100, 103)  # e.g. a transactional producer's markers
        assert (verdict, gap) == (Verdict.REREAD, Gap(100, 103, n))
    assert judge(gap, 100, 103) == (Verdict.ACCEPT, None)


def test_a_new_gap_after_progress_starts_its_own_count() -> None:
    assert judge(Gap(100, 900, 3), 500, 900) == (Verdict.REREAD, Gap(500, 900, 1))
