"""When the embedded broker's memory should warn a person, and when it should stop the stack.

The embedded broker keeps every record in memory and never lets go of one, so a long
`citybrain up` grows it until the machine runs out (measured: +4.3 MB/s at 780 events/s
in the 30-minute soak of 2026-11-21, benchmarks/README.md, Soak). `up` samples its resident memory and asks this watch: once
past the warning level it says so once, with the time left at the recent rate; past the
limit it stops the whole stack cleanly with one line saying why, rather than letting the
kernel's OOM killer pick a process. Pure: samples in, lines out (services/stack.py reads
/proc and acts).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path

# Defaults, as shares of the machine's memory: the worker, the API and everything else on
# the machine need the rest.
LIMIT_SHARE = 0.5
WARN_SHARE_OF_LIMIT = 2 / 3
RATE_WINDOW_S = 60.0  # growth rate over the last minute of samples

ADVICE = ("it keeps every record in memory; for long runs use Apache Kafka "
          "(--broker HOST:PORT, see deploy/)")


@dataclass(frozen=True)
class Limits:
    warn_mb: float
    stop_mb: float


def limits(total_mb: float, warn_mb: float | None = None, stop_mb: float | None = None) -> Limits:
    """The limits in force: the settings given, else half the machine's memory to stop at and
    two thirds of the stop level to warn at (never above it)."""
    stop = stop_mb if stop_mb is not None else total_mb * LIMIT_SHARE
    warn = warn_mb if warn_mb is not None else stop * WARN_SHARE_OF_LIMIT
    return Limits(min(warn, stop), stop)


def machine_memory_mb(meminfo: Path = Path("/proc/meminfo")) -> float:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no MemTotal in {meminfo}")


@dataclass(frozen=True)
class Verdict:
    stop: bool  # False: a warning, the stack goes on
    line: str


class BrokerMemoryWatch:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._samples: deque[tuple[float, float]] = deque()
        self._warned = False

    def sample(self, t_s: float, rss_mb: float) -> Verdict | None:
        """Judge one sample (`t_s` on a monotonic clock): a stop, a first warning, or None."""
        self._samples.append((t_s, rss_mb))
        while t_s - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        lim = self.limits
        if rss_mb >= lim.stop_mb:
            return Verdict(True, f"citybrain: stopping: the embedded broker uses {rss_mb:,.0f} MB of memory, "
                                 f"past its limit of {lim.stop_mb:,.0f} MB (CITYBRAIN_BROKER_MEMORY_LIMIT_MB); "
                                 f"{ADVICE}, or restart citybrain up (the broker starts empty)")
        if rss_mb >= lim.warn_mb and not self._warned:
            self._warned = True
            return Verdict(False, f"citybrain: warning: the embedded broker uses {rss_mb:,.0f} MB of memory "
                                  f"(CITYBRAIN_BROKER_MEMORY_WARN_MB={lim.warn_mb:,.0f}); the stack stops at "
                                  f"{lim.stop_mb:,.0f} MB (CITYBRAIN_BROKER_MEMORY_LIMIT_MB){self._time_left(rss_mb)}; "
                                  f"{ADVICE}")
        return None

    def _time_left(self, rss_mb: float) -> str:
        (t0, m0), (t1, m1) = self._samples[0], self._samples[-1]
        if t1 - t0 < 1.0 or m1 <= m0:
            return ""
        rate = (m1 - m0) / (t1 - t0)
        minutes = max(1, round((self.limits.stop_mb - rss_mb) / rate / 60))
        return f", in about {minutes:,} min at the last minute's +{rate:.1f} MB/s"
