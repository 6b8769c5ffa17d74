"""The speed benchmark's figures: one ``CaseResult`` per (model, image size, objects), kept as
JSON beside the markdown so a later run can add cases to an earlier one (``--merge``)."""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..timing import STAGES, FrameTimes

REFERENCE = "reference"  # the name of Meta's video predictor among the contestants


@dataclass(frozen=True)
class Case:
    model: str
    image_size: int
    objects: int


@dataclass
class CaseResult:
    """Timed frames of one case: ours per backend (with stages), the reference's (no
    stages), the lowest mask IoU of each backend against the reference, optional profiles."""

    case: Case
    ours: dict[str, list[FrameTimes]] = field(default_factory=dict)
    reference: list[FrameTimes] = field(default_factory=list)
    min_iou: dict[str, float] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)  # load average as the case started
    threads: int = 0
    date: str = ""

    def frames(self, name: str) -> list[FrameTimes]:
        return self.reference if name == REFERENCE else self.ours[name]

    def median_total(self, name: str) -> float:
        """Median wall seconds per frame of ``name`` (a backend or ``REFERENCE``)."""
        return statistics.median(f.total for f in self.frames(name))

    def median_cpu(self, name: str) -> float:
        """Median CPU seconds per frame (this process) of ``name``."""
        return statistics.median(f.cpu for f in self.frames(name))

    def median_stages(self, backend: str) -> dict[str, float]:
        rows = [f.with_glue() for f in self.ours[backend]]
        return {s: statistics.median(r[s] for r in rows) for s in STAGES}


def save_results(results: list[CaseResult], notes: list[str], path: Path) -> None:
    """Every figure of ``results`` as JSON (what ``--merge`` reads back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"notes": notes, "results": [asdict(r) for r in results]},
                               indent=1))


def load_results(path: Path) -> tuple[list[CaseResult], list[str]]:
    if not path.is_file():
        return [], []
    data = json.loads(path.read_text())

    def frames(rows):
        return [FrameTimes(**row) for row in rows]

    results = [CaseResult(Case(**r["case"]), {b: frames(f) for b, f in r["ours"].items()},
                          frames(r["reference"]), r["min_iou"], r["profiles"],
                          tuple(r["load"]), r["threads"], r["date"])
               for r in data["results"]]
    return results, data["notes"]


def merged(old: list[CaseResult], new: list[CaseResult]) -> list[CaseResult]:
    """``old`` with the cases run again replaced by their new results, then the new cases."""
    fresh = {r.case: r for r in new}
    out = [fresh.pop(r.case, r) for r in old]
    return out + [r for r in new if r.case in fresh]
