"""The same tumbling-window count with Quix Streams, a peer users pick instead of Faust.
`python -m benchmarks.quix BOOTSTRAP PREFIX EVENTS STATE_DIR` prints one JSON line.

Quix asks the broker (DescribeConfigs) for the source topics' `retention.ms` to derive its
changelog topics' config; the event topics state it (streams/topics.py) because the
embedded broker reports only the configs a topic was created with. Quix creates its own
changelog topics (explicitly, with the source's partition count).
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any

import orjson
from quixstreams import Application

from streams.topics import DOMAINS, Topics


def main() -> None:
    bootstrap, prefix, expected, state_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    app = Application(broker_address=bootstrap, consumer_group=f"{prefix}quix",
                      auto_offset_reset="earliest", auto_create_topics=True,
                      state_dir=state_dir, loglevel="WARNING")
    seen: dict[str, Any] = {"n": 0, "first": None}

    def count(value: Any) -> Any:
        if seen["first"] is None:
            seen["first"] = time.perf_counter()
        seen["n"] += 1
        if seen["n"] >= expected:
            elapsed = time.perf_counter() - seen["first"]
            print(orjson.dumps({"events": seen["n"], "seconds": elapsed,
                                "events_per_s": seen["n"] / elapsed}).decode(), flush=True)
            app.stop()
        return value

    topics = Topics(prefix)
    for domain in DOMAINS:
        sdf = app.dataframe(app.topic(topics.events(domain), value_deserializer="json"))
        sdf.update(count).tumbling_window(timedelta(minutes=1)).count().final()
    app.run()


if __name__ == "__main__":
    main()
