"""Benchmarks behind ``ark-lattice bench``: each reports ratios measured in one run (DESIGN §15).

Each ``run`` takes a :class:`Progress` and says through it how many steps it has and when each one
ends; the CLI draws that as a bar on a terminal. Reporting a step never happens inside a timed
section, except where a step's own poll already holds the count it reports (``bench sync``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Measurement", "Progress", "SILENT"]


@dataclass(frozen=True)
class Measurement:
    name: str
    value: float
    unit: str
    bound: float | None = None  # the reference measured in the same run, when there is one
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return None if not self.bound else self.value / self.bound

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "value": round(self.value, 3), "unit": self.unit}
        if self.bound is not None:
            doc["bound"] = round(self.bound, 3)
            doc["ratio"] = round(self.ratio, 4) if self.ratio is not None else None
        if self.note:
            doc["note"] = self.note
        return doc


class Progress(Protocol):
    """Where a bench says how far it has got (the CLI's ``ProgressBar`` is one)."""

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
    ) -> None: ...

    def advance(self, units: float = 1) -> None: ...


class _Silent:
    """Progress nobody watches: the default of every ``run``."""

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
    ) -> None:
        pass

    def advance(self, units: float = 1) -> None:
        pass


SILENT: Progress = _Silent()
