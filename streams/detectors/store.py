"""The rules' state of one partition, as columns: a row per entity, the partition's slot.

The rules ask for their columns by name (`column`), each with its dtype, the value a new
row starts with and, for tables, a row width; a column is made on first use and grows
with the partition's entities. So the state holds only numbers, whatever the domain: the
stored layout (streams/state.py) writes the columns as they are, and a rule that starts
keeping something new just asks for one more column. What is rare and of no fixed size
(a gate's recent denials) is `sparse`: a small JSON-friendly value per row that has one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

NONE = np.iinfo(np.int64).min  # an absent time in an int64 column


class RuleState:
    def __init__(self, rows: int = 0, cols: dict[str, np.ndarray] | None = None,
                 sparse: dict[str, dict[int, Any]] | None = None) -> None:
        self.rows = rows  # rows in use: one more than the highest slot judged
        self.cols: dict[str, np.ndarray] = cols or {}
        self.sparse: dict[str, dict[int, Any]] = sparse or {}
        # what the rules derive per row from the registry (parameters, ratings): not stored,
        # and dropped when the registry changes (`derived_from` says which version it is of)
        self.derived: dict[str, np.ndarray] = {}
        self.derived_from: Any = None

    def reserve(self, rows: int) -> None:
        """Rows up to `rows` are in use from now on. Columns grow when next asked for, and
        the rules ask for every column of theirs in each step, so after a step all have."""
        self.rows = max(self.rows, rows)

    def column(self, name: str, dtype: Any, fill: Any, width: int = 0, derived: bool = False) -> np.ndarray:
        """The column `name`, with at least `rows` rows; new rows hold `fill`."""
        cols = self.derived if derived else self.cols
        a = cols.get(name)
        if a is None or len(a) < self.rows:
            # a quarter more at a time: amortised growth without doubling the heap
            size = max(64, self.rows, len(a) + len(a) // 4 if a is not None else 0)
            grown = np.empty((size, width) if width else size, dtype)
            kept = 0 if a is None else len(a)
            if a is not None:
                grown[:kept] = a
            grown[kept:] = fill
            a = cols[name] = grown
        return a

    def used(self) -> dict[str, np.ndarray]:
        """Every column's rows in use, for the stored layout."""
        return {name: a[:self.rows] for name, a in sorted(self.cols.items())}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RuleState):
            return NotImplemented
        mine, theirs = self.used(), other.used()
        return (self.rows == other.rows and mine.keys() == theirs.keys() and self.sparse == other.sparse
                and all(np.array_equal(a, theirs[k], equal_nan=a.dtype.kind == "f") for k, a in mine.items()))
