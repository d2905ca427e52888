"""The outlook (展望): every device series forecast 15, 30 and 60 minutes ahead, learnt
online in the workers from the closed windows (issue 19).

One partition's state and step, free of Faust: the closed window records of the
aggregates topic in (streams/forecast_agent.py hands them over, parsed once for early
warning and this), records for the forecasts topic out. Per domain (`FIGURES`) one
compact `Forecaster` (streams/forecast.py) holds a slot per series, `<figure>|<entity>`:
a gate's passes, a road detector's volume, speed and occupancy, a feeder's load.

The model steps every STEP_MS (5 minutes), not every window: the three horizons are then
3, 6 and 12 steps, with no weekly correction and errors tracked 12 steps ahead. Smooth
series (a feeder's load, a road's speed and occupancy, and its volume with them) keep a
time-of-day bin per step, 288, 3.2 KB a series: a coarser profile cannot follow a load's
daily curve within a bin, and its forecasts were worse than yesterday's value (MASE 2.2
on the simulator's feeders with 96 bins). A gate's passes, Poisson counts, do as well
with 96 bins, 1.65 KB a series (benchmarks/README.md measures both on NAB and on the
simulator's city). A window-step model would hold 7.5 KB. A series' windows are summed into its
current step (`acc_*` columns), and the step is learnt when its last window closes; the
series without a window in that minute (a gate without passes, a detector that reports
every 5 minutes) all learn theirs when the partition's first window of a later step does:
a partition's windows close in order, so by then none of the step's is still to come. A figure is in the unit of a window, as the windows' own figures are: a mean
figure is the step's pooled mean (sum over count of the readings); a total (passes,
volume) is the step's total over the windows a step holds, so a minute without a
window counts as zero (a gate with no passes sends no window). A step without any
window is a gap the model steps over (streams/forecast.py), not a zero.

A learnt step's forecast is published at once: per domain and partition, records of
columns (`records`), keyed `<domain>/<partition>/<chunk of slots>` on a compacted topic.
A record holds its chunk whole, every series of it that has learnt a step, so the newest
record of each key, all that compaction keeps, has the latest forecast of every series.

Everything depends only on the closed windows in partition order; a window seen again
(a replay after a crash, or a domain worker's own replay) is not added twice
(`acc_window`), so a replay from a snapshot learns and publishes exactly what the first
run did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from streams.forecast import Config, Forecaster
from streams.state import SlotIndex
from streams.windows import field_columns

STEP_MS = 300_000
HORIZONS = (3, 6, 12)  # steps ahead published: 15, 30 and 60 minutes
HORIZONS_S = tuple(h * STEP_MS // 1000 for h in HORIZONS)
# One time-of-week bin: no weekly correction (a constant offset is what the daily profile
# and level already hold, so the forecaster's gate never turns it on).
CONFIGS = {"smooth": Config(step_ms=STEP_MS, horizon=max(HORIZONS), profile_bins=288, week_bins=1),
           "counts": Config(step_ms=STEP_MS, horizon=max(HORIZONS), profile_bins=96, week_bins=1)}
MODEL = {"gate": "counts", "traffic": "smooth", "grid": "smooth"}  # each domain's kind of model
COVERAGE = CONFIGS["smooth"].coverage
# Series a forecasts record holds: about 255 KB with 8-character ids, up to 1 MiB with the
# longest ids (streams/events.py MAX_ID_LEN), like the window records.
ROWS_PER_RECORD = 2_000
LAYOUT = 1


@dataclass(frozen=True)
class Figure:
    """A figure of a domain's windows: `name` as the API's window figures call it
    (streams/windows.py `Agg.figures`), from a counter or a numeric field, as the step's
    total per window or its pooled mean."""

    name: str
    source: str  # a counter's or a field's name in the window record's columns
    counter: bool = False
    total: bool = False  # else the mean of the step's readings

    def sums(self, cols: dict[str, Any], rows: int) -> tuple[np.ndarray, np.ndarray]:
        """(sum, readings) per row of a window record; NaN where the record has no such
        column (nothing to learn: a shape without the field)."""
        try:
            if self.counter:
                counts = np.asarray(cols["c"][self.source], np.float64)
                return counts, np.ones_like(counts)
            f = field_columns(cols, self.source)
            return np.asarray(f["sum"], np.float64), np.asarray(f["count"], np.float64)
        except KeyError:
            return np.full(rows, np.nan), np.full(rows, np.nan)


FIGURES: dict[str, tuple[Figure, ...]] = {
    "gate": (Figure("passes", "passes", counter=True, total=True),),
    "traffic": (Figure("volume", "volume", total=True), Figure("speed_kmh_mean", "speed_kmh"),
                Figure("occupancy_mean", "occupancy")),
    "grid": (Figure("load_kw_mean", "load_kw"),),
}
# The figure a domain is forecast for when none is named (here and in the API's routes,
# the window history's too): what each kind of device is watched for.
DEFAULT_FIGURE = {"gate": "passes", "traffic": "volume", "grid": "load_kw_mean"}

# Per slot: the step being summed (-1: none), its sum and readings, the start of the last
# window added (so a window seen again is not added twice), and whether its figure is a
# total (1) or a mean (0).
_ACC = {"acc_step": (np.int64, -1), "acc_sum": (np.float64, 0.0), "acc_n": (np.float64, 0.0),
        "acc_window": (np.int64, -1), "acc_total": (np.int8, 0)}


@dataclass
class DomainOutlook:
    """One domain's series on one partition: their model, slots and step sums."""

    model: Forecaster
    series: SlotIndex = field(default_factory=SlotIndex)
    acc: dict[str, np.ndarray] = field(default_factory=lambda: {k: np.full(0, v, t) for k, (t, v) in _ACC.items()})

    def reserve(self, slots: int) -> None:
        extra = slots - len(self.acc["acc_step"])
        if extra > 0:
            for name, (dtype, init) in _ACC.items():
                self.acc[name] = np.concatenate([self.acc[name], np.full(extra, init, dtype)])
        self.model.reserve(slots)


@dataclass(frozen=True)
class Learnt:
    """A domain's series that have just learnt a step: their slots, to forecast and publish."""

    domain: str
    slots: np.ndarray


class Outlook:
    """One partition's outlook: per domain a `DomainOutlook`. (The last source offset
    applied is the early-warning state's, which it is stored with.)"""

    def __init__(self, window_ms: int) -> None:
        """Raises ValueError for a window that does not divide the step."""
        if STEP_MS % window_ms:
            raise ValueError(f"a window of {window_ms} ms does not divide the outlook's {STEP_MS} ms step")
        self.window_ms = window_ms
        self.domains: dict[str, DomainOutlook] = {}

    def add(self, domain: str, window_start: int, entities: list[str], cols: dict[str, Any]) -> Learnt | None:
        """A closed window record of `domain`: add its figures to their series' steps, and
        learn the steps it ends. The series that learnt one, if any. Raises TypeError or
        ValueError for columns that are not a window record's."""
        figures = FIGURES.get(domain)
        if not figures or not entities:
            return None
        sums, counts = zip(*(f.sums(cols, len(entities)) for f in figures))
        value, n = np.concatenate(sums), np.concatenate(counts)
        total = np.repeat([f.total for f in figures], len(entities))
        if value.shape != total.shape or n.shape != total.shape:
            raise ValueError("a window record's columns do not match its entities")
        d = self.domains.get(domain)
        if d is None:
            d = self.domains[domain] = DomainOutlook(Forecaster(CONFIGS[MODEL[domain]]))
        slots = d.series.of([f"{f.name}|{e}" for f in figures for e in entities])
        d.reserve(len(d.series))
        acc = d.acc
        acc["acc_total"][slots] = total
        fresh = acc["acc_window"][slots] < window_start  # a window seen again adds nothing
        slots, value, n = slots[fresh], value[fresh], n[fresh]
        step = window_start // STEP_MS
        # Every series of the partition whose step ended before this window's and is not
        # learnt yet (no window in the step's last minute) learns it now.
        every = acc["acc_step"]
        before = self._learn(d, np.flatnonzero((every >= 0) & (every < step) & (every > d.model.state["last_step"])))
        held = acc["acc_step"][slots]
        restart = slots[held != step]
        acc["acc_sum"][restart], acc["acc_n"][restart] = 0.0, 0.0
        acc["acc_step"][slots], acc["acc_window"][slots] = step, window_start
        ok = np.isfinite(value) & np.isfinite(n)
        acc["acc_sum"][slots[ok]] += value[ok]
        acc["acc_n"][slots[ok]] += n[ok]
        last = (window_start + self.window_ms) % STEP_MS == 0
        now = self._learn(d, slots) if last else slots[:0]
        done = np.union1d(before, now)
        return Learnt(domain, done) if len(done) else None

    def _learn(self, d: DomainOutlook, slots: np.ndarray) -> np.ndarray:
        """Learn the summed steps of `slots`: a total per window of the step, or the pooled
        mean (NaN without readings: nothing to learn). The slots that learnt one."""
        if not len(slots):
            return slots
        acc = d.acc
        s, k, total = acc["acc_sum"][slots], acc["acc_n"][slots], acc["acc_total"][slots] == 1
        with np.errstate(invalid="ignore", divide="ignore"):
            figure = np.where(k > 0, np.where(total, s / (STEP_MS // self.window_ms), s / k), np.nan)
        d.model.learn(slots, acc["acc_step"][slots] * STEP_MS, figure)
        return slots[d.model.state["last_step"][slots] == acc["acc_step"][slots]]

    def records(self, partition: int, learnt: Learnt) -> list[tuple[bytes, bytes]]:
        """The forecasts-topic records of the chunks (ROWS_PER_RECORD slots each) holding
        the series that learnt a step, keyed `<domain>/<partition>/<chunk>`: each the whole
        chunk, every series of it that has learnt a step, since on the compacted topic a
        key's newest record is all that stays (a closed window in several records, or a
        series whose step is learnt late, would otherwise push the others of its chunk
        out). Each row is a series (`figures[i]` of `entities[i]`) with the end of its last
        learnt step (`made_at`, ms), its steps learnt, and at HORIZONS steps after it the
        mean and the 80 % interval (null where the interval has no width yet: no error
        measured that far ahead)."""
        d = self.domains[learnt.domain]
        known = len(d.series)
        slots = np.concatenate([np.arange(c * ROWS_PER_RECORD, min((c + 1) * ROWS_PER_RECORD, known))
                                for c in np.unique(learnt.slots // ROWS_PER_RECORD).tolist()])
        slots = slots[d.model.state["last_step"][slots] >= 0]
        fc = d.model.forecast(slots, max(HORIZONS))
        at = np.array(HORIZONS) - 1
        mean, low, high = fc.mean[:, at], fc.low[:, at], fc.high[:, at]
        measured = high > low
        low, high = np.where(measured, low, np.nan), np.where(measured, high, np.nan)
        made_at = (d.model.state["last_step"][slots] + 1) * STEP_MS
        learnt_steps = d.model.state["seen"][slots]
        out = []
        chunks = slots // ROWS_PER_RECORD
        for chunk in np.unique(chunks).tolist():
            rows = np.flatnonzero(chunks == chunk)
            figures, entities = zip(*(d.series.ids[s].split("|", 1) for s in slots[rows].tolist()))
            doc = {"domain": learnt.domain, "step_ms": STEP_MS,
                   "coverage": COVERAGE, "horizons_s": HORIZONS_S,
                   "figures": figures, "entities": entities, "made_at": made_at[rows], "learnt": learnt_steps[rows],
                   # float32: seven significant digits say all a forecast knows, in half the bytes
                   "mean": mean[rows].astype(np.float32), "low": low[rows].astype(np.float32),
                   "high": high[rows].astype(np.float32)}
            out.append((f"{learnt.domain}/{partition}/{chunk}".encode(),
                        orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)))
        return out


# ---------------------------------------------------------------- stored layout


def encode(outlook: Outlook) -> bytes:
    """The whole state, exactly: a JSON header (per domain its series and sizes), then each
    domain's model and step sums."""
    blobs = {domain: [d.model.encode()] + [np.ascontiguousarray(d.acc[k]).tobytes() for k in _ACC]
             for domain, d in outlook.domains.items()}
    header = orjson.dumps({"layout": LAYOUT, "window_ms": outlook.window_ms,
                           "domains": [{"domain": domain, "series": outlook.domains[domain].series.ids,
                                        "bytes": [len(b) for b in parts]} for domain, parts in blobs.items()]})
    return b"".join([len(header).to_bytes(8, "big"), header, *(b for parts in blobs.values() for b in parts)])


def decode(payload: bytes, window_ms: int) -> Outlook:
    """Raises ValueError for a layout this worker does not read, a state of another window
    (its steps' sums and totals are in that window's units), or one that is not whole."""
    size = int.from_bytes(payload[:8], "big")
    try:
        header = orjson.loads(payload[8:8 + size])
        layout, stored_window = header.get("layout"), header.get("window_ms")
    except (orjson.JSONDecodeError, AttributeError):
        raise ValueError("outlook state: not a header") from None
    if layout != LAYOUT:
        raise ValueError(f"outlook state layout {layout!r}; this worker reads {LAYOUT}")
    if stored_window != window_ms:
        raise ValueError(f"outlook state of {stored_window} ms windows; the city's are {window_ms} ms")
    outlook, at = Outlook(window_ms), 8 + size
    try:
        for entry in header["domains"]:
            model_bytes, *acc_bytes = entry["bytes"]
            d = DomainOutlook(Forecaster.decode(payload[at:at + model_bytes]), SlotIndex(entry["series"]))
            at += model_bytes
            for (name, (dtype, _)), nbytes in zip(_ACC.items(), acc_bytes):
                d.acc[name] = np.frombuffer(payload[at:at + nbytes], dtype).copy()
                at += nbytes
            if any(len(a) != len(d.series) for a in d.acc.values()) or d.model.capacity < len(d.series):
                raise ValueError("columns and series differ in length")
            outlook.domains[entry["domain"]] = d
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"outlook state not whole: {exc}") from None
    return outlook
