"""Scale-in, over and over: the scenario of tests/test_stream_engine.py where one of two
workers leaves and the other must take over and fetch every partition. It once stalled
about one run in six, so one run in `make test` says little; `make stress-scale-in`
repeats it (STRESS_SCALE_IN_RUNS, 20 by default) and is skipped otherwise."""

from __future__ import annotations

import os
from typing import Callable

import pytest

from services.config import Settings
from tests.conftest import Proc
from tests.test_stream_engine import test_two_workers_share_partitions_and_stay_exact_when_one_leaves as scenario

RUNS = int(os.environ.get("STRESS_SCALE_IN_RUNS") or 0)

pytestmark = pytest.mark.skipif(not RUNS, reason="a stress run: make stress-scale-in")


@pytest.mark.parametrize("run", range(RUNS or 1))
def test_scale_in_never_stalls(run: int, settings: Settings, start_worker: Callable[..., Proc]) -> None:
    scenario(settings, start_worker)
