"""Benchmarks behind ``ark-lattice bench``: each reports ratios measured in one run (DESIGN §15)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Measurement"]


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
