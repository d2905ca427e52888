"""Per-rule precision and recall of the rule catalogue against the simulator's ground truth.

`python -m benchmarks.rules [--minutes 30] [--rate 1000] [--every 5] [--seed 7]` simulates a
city, runs every event through the same detectors the workers run (one step per simulated
second, one state per entity, silence judged by stream time), and matches detections to
the injected anomalies:

- an injected episode is *found* if an alert of its rule on its entity fires between its
  start and `GRACE_S` after its end (recall = found / injected);
- a fired alert is *right* if it fires in such a span of an episode of its rule on its
  entity (precision = right / fired).
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from services.city import City
from services.simulator import KINDS, generate
from streams.columns import decode
from streams.detectors import Batch, Detection, RuleState, detector
from streams.registry import Registry
from streams.rules import RuleBook
from streams.state import SlotIndex
from streams.topics import DOMAINS

GRACE_S = 240  # a rule may need its minimum duration, or a minute's close, after the episode
START = datetime(2026, 11, 21, 7, 30, tzinfo=timezone(timedelta(hours=8)))


def detect_city(city: City, minutes: int, seed: int, every_s: float,
                rules: RuleBook | None = None) -> tuple[list[Detection], list[dict], int]:
    registry = Registry(city.entities)
    rules = rules or RuleBook()
    detectors = {d: detector(d, rules, registry) for d in DOMAINS}
    states = {d: RuleState() for d in DOMAINS}
    slots = {d: SlotIndex() for d in DOMAINS}
    found: list[Detection] = []
    truth: list[dict] = []
    n = 0
    for tick in generate(city, START, minutes * 60, seed=seed, anomaly_every_s=every_s):
        truth += [a.truth() for a in tick.began]
        for domain in DOMAINS:
            events, _ = decode(domain, [(0, None, orjson.dumps({"events": tick.events[domain]}))], None,
                               max_batch=len(tick.events[domain]))
            n += len(events)
            if not len(events):
                continue
            det = detectors[domain]
            found += det.detect(Batch(events, slots[domain].of(events.entity)), states[domain])
            found += det.silent(states[domain], slots[domain].ids, int(events.ts.max()))
    return found, truth, n


def score(found: list[Detection], truth: list[dict]) -> dict[str, dict[str, Any]]:
    spans = defaultdict(list)
    for t in truth:
        spans[(t["rule"], t["entity"])].append((t["start_ms"], t["end_ms"] + GRACE_S * 1000))
    fired = [d for d in found if d.status == "firing" and d.seq == 1]
    table: dict[str, dict[str, Any]] = {}
    for rule, _ in KINDS:
        injected = [t for t in truth if t["rule"] == rule]
        alerts = [d for d in fired if d.rule == rule]
        right = [d for d in alerts if any(lo <= d.ts <= hi for lo, hi in spans[(rule, d.entity)])]
        hit = [t for t in injected if any(d.entity == t["entity"] and t["start_ms"] <= d.ts
                                          <= t["end_ms"] + GRACE_S * 1000 for d in alerts)]
        delays = sorted(min(d.ts - t["start_ms"] for d in alerts if d.entity == t["entity"]
                            and t["start_ms"] <= d.ts <= t["end_ms"] + GRACE_S * 1000) for t in hit)
        table[rule] = {
            "injected": len(injected), "fired": len(alerts), "found": len(hit), "right": len(right),
            "precision": len(right) / len(alerts) if alerts else 1.0,
            "recall": len(hit) / len(injected) if injected else 1.0,
            "median_delay_s": delays[len(delays) // 2] / 1000 if delays else None,
        }
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--rate", type=float, default=1000, help="city size, in events/s at the daily mean")
    ap.add_argument("--every", type=float, default=5.0, help="mean seconds between injected anomalies")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    city = City.sized_for(args.rate, args.seed)
    started = time.perf_counter()
    found, truth, n = detect_city(city, args.minutes, args.seed, args.every)
    took = time.perf_counter() - started
    table = score(found, truth)
    print(f"{args.minutes} simulated minutes, {len(city.entities)} devices, {n:,} events, "
          f"{len(truth)} injected anomalies, {took:.0f} s (simulator + detectors)")
    print(f"{'rule':22} {'injected':>8} {'fired':>6} {'precision':>9} {'recall':>7} {'delay s':>8}")
    for rule, r in table.items():
        delay = "-" if r["median_delay_s"] is None else f"{r['median_delay_s']:.0f}"
        print(f"{rule:22} {r['injected']:>8} {r['fired']:>6} {r['precision']:>9.3f} {r['recall']:>7.3f} {delay:>8}")


if __name__ == "__main__":
    main()
