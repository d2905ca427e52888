"""Simulated units for `citybrain simulate --handle`: the city's grid workers, community
offices and street desks taking on their cases (streams/cases.py) as people do, so a
new user sees cases accepted, handled and closed, some late and escalated, and the
KPIs move.

Each unit acts on a case at a time drawn from the time it has left at its level: most
well within it, `LATE` of them past it, so the case escalates first and the level above
takes it on. Commands go to the case-inputs topic like the API's, by `HANDLER`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from api.cases import CaseView
from streams.alerting import ms
from streams.cases import WAITING, command
from streams.kafka_security import client_options
from streams.topics import Topics
from streams.topicview import TopicView

HANDLER = "模拟处置员 simulated unit"
LATE = 0.25  # share of steps taken after their time limit
NEXT = {"accepted": "feedback", "handled": "verify", "verified": "close"}
NOTES = {"accept": "已受理，正在赶往现场", "feedback": "现场已处置，设备恢复", "verify": "已核查", "close": "办结"}
CHECK_S = 1.0
QUICK_S = (5.0, 30.0)  # checking and closing take seconds


def next_step(case: dict[str, Any], now_ms: int, rng: np.random.Generator) -> tuple[str, float] | None:
    """What the unit holding `case` does next and in how many seconds; None when nothing."""
    if case["status"] in WAITING:
        kind, limit = "accept", case["accept_by"]
    elif case["status"] == "accepted":
        kind, limit = "feedback", case["handle_by"]
    elif case["status"] in NEXT:
        return NEXT[case["status"]], float(rng.uniform(*QUICK_S))
    else:
        return None
    left_s = max(ms(limit) - now_ms, 1000) / 1000
    late = rng.random() < LATE
    return kind, left_s * float(rng.uniform(1.1, 1.5) if late else rng.uniform(0.1, 0.8))


async def run_units(bootstrap: str, topics: Topics, seed: int = 7) -> None:
    """Act on the city's open cases until cancelled."""
    cases = CaseView()
    view = TopicView(bootstrap, topics.cases, cases.apply)
    producer = AIOKafkaProducer(**client_options(bootstrap), acks=1)
    rng = np.random.default_rng([seed, 3])
    planned: dict[str, tuple[int, float, str]] = {}  # case id → (its seq, when, what)
    await view.start()
    await producer.start()
    try:
        while True:
            now = time.time()
            for cid, case in cases.cases.items():
                if planned.get(cid, (None,))[0] != case["seq"]:
                    step = next_step(case, int(now * 1000), rng)
                    planned[cid] = (case["seq"], now + step[1], step[0]) if step else (case["seq"], float("inf"), "")
            for cid, (seq, due, kind) in list(planned.items()):
                if due <= now:
                    doc = command(kind, cases.cases[cid], HANDLER, NOTES[kind], int(now * 1000))
                    await producer.send(topics.case_inputs, orjson.dumps(doc), key=cid.encode())
                    planned[cid] = (seq, float("inf"), "")  # once; the case's next state plans again
            await asyncio.sleep(CHECK_S)
    finally:
        await producer.stop()
        await view.stop()
