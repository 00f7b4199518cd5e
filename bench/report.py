"""Figures, their baselines and targets: the printed table and the JSON file.

Every figure is printed with the physical baseline it is held against and the
ratio ``value / baseline`` (for rates, the fraction of the baseline reached; for
latencies, how many times the baseline's latency). The ratios are what should
hold from run to run on the same machine: :func:`compare` sets a run beside the
previous one and flags a ratio that moved by more than 20%.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STABLE_WITHIN = 0.20


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Figure:
    key: str
    group: str
    label: str
    value: float | None
    unit: str
    baseline_label: str = ""
    baseline: float | None = None
    #: ``<=`` or ``>=`` and the threshold, when the figure has a target.
    target_op: str = ""
    target: float | None = None
    #: Name of the phase that produced the figure (its CPU use explains it).
    phase: str = ""
    note: str = ""
    #: Printed instead of the value (e.g. "> 10 s" when answers never came).
    value_text: str = ""
    #: Measured at an offered rate the platform could not serve: the latency then
    #: grows with the length of the window, so it is no property of the platform.
    overloaded: bool = False
    #: The phase that measured the baseline, when it is one (the bare endpoint's).
    baseline_phase: str = ""
    #: How much slower the cores ran during the figure's phase than during its
    #: baseline's: the ratio of the speed probe's medians (set for CPU-bound figures).
    speed: float | None = None
    #: The median of the ratios of rounds measured in pairs (the baseline's window
    #: right before the figure's): the ratio, when set.
    paired_ratio: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.paired_ratio is not None:
            return self.paired_ratio
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def adjusted_ratio(self) -> float | None:
        """The ratio as if the cores had run at the same speed for figure and baseline.

        Only for CPU-bound figures (saturation, CPU per request): a rate is scaled
        up by the slowdown, a time or CPU cost scaled down by it.
        """
        ratio = self.ratio
        if ratio is None or not self.speed:
            return ratio
        return ratio * self.speed if self.unit == "/s" else ratio / self.speed

    @property
    def result(self) -> str:
        if self.target is None:
            return ""
        if self.value is None:
            # no answers within the wait is a miss; a step that did not run is not
            return "MISS" if self.value_text else ""
        ok = self.value <= self.target if self.target_op == "<=" else self.value >= self.target
        return "pass" if ok else "MISS"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["adjusted_ratio"] = self.adjusted_ratio
        data["result"] = self.result
        return data


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "ms":
        text = f"{value:.1f}" if value < 100 else f"{value:,.0f}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if ratio >= 100:
        return f"{ratio:,.0f}x"
    if ratio >= 10:
        return f"{ratio:.1f}x"
    if ratio >= 0.1:
        return f"{ratio:.2f}x"
    return f"{ratio:.4f}x"


def table(rows: list[list[str]], header: list[str], right: set[int] | None = None) -> str:
    right = right or set()
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def figures_table(figures: list[Figure]) -> str:
    rows: list[list[str]] = []
    group = None
    for f in figures:
        if f.group != group:
            if group is not None:
                rows.append([""] * 7)
            rows.append([f"[{f.group}]", "", "", "", "", "", ""])
            group = f.group
        target = f"{f.target_op} {fmt(f.target, f.unit)}" if f.target is not None else ""
        baseline = (
            f"{fmt(f.baseline, _baseline_unit(f))} {f.baseline_label}".strip() if f.baseline else ""
        )
        rows.append(
            [
                "  " + f.label,
                f.value_text or fmt(f.value, f.unit),
                baseline,
                fmt_ratio(f.ratio),
                target,
                f.result,
                f.note,
            ]
        )
    return table(
        rows,
        ["figure", "value", "baseline", "ratio", "target", "result", "note"],
        right={1, 3},
    )


def _baseline_unit(f: Figure) -> str:
    return "ms" if f.unit == "ms" else ""


def compare(current: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """Each figure's ratio beside the previous run's, and whether it held within 20%."""
    # key and label: runs written before a key was made unique still compare correctly
    before = {(f["key"], f["label"]): f for f in previous.get("figures", [])}
    rows = []
    for f in current["figures"]:
        old = before.get((f["key"], f["label"]))
        if old is None or f.get("ratio") is None or not old.get("ratio"):
            continue
        change = f["ratio"] / old["ratio"] - 1
        now_adjusted = f.get("adjusted_ratio") or f["ratio"]
        before_adjusted = old.get("adjusted_ratio") or old["ratio"]
        adjusted_change = now_adjusted / before_adjusted - 1
        rows.append(
            {
                "key": f["key"],
                "label": f["label"],
                "previous": old["ratio"],
                "current": f["ratio"],
                "change": change,
                "stable": abs(change) <= STABLE_WITHIN,
                "adjusted_change": adjusted_change,
                "adjusted_stable": abs(adjusted_change) <= STABLE_WITHIN,
                "overloaded": bool(f.get("overloaded") or old.get("overloaded")),
            }
        )
    steady = [r for r in rows if not r["overloaded"]]
    return {
        "previous_run": previous.get("meta", {}).get("timestamp"),
        "rows": rows,
        "stable": sum(1 for r in rows if r["stable"]),
        "compared": len(rows),
        "stable_not_overloaded": sum(1 for r in steady if r["stable"]),
        "compared_not_overloaded": len(steady),
        "adjusted_stable_not_overloaded": sum(1 for r in steady if r["adjusted_stable"]),
    }


def comparison_table(comparison: dict[str, Any]) -> str:
    rows = [
        [
            r["label"],
            fmt_ratio(r["previous"]),
            fmt_ratio(r["current"]),
            f"{100 * r['change']:+.0f}%",
            "yes" if r["stable"] else "NO",
            f"{100 * r.get('adjusted_change', r['change']):+.0f}%",
            "yes" if r.get("adjusted_stable", r["stable"]) else "NO",
            "overloaded: latency grows with the window" if r["overloaded"] else "",
        ]
        for r in comparison["rows"]
    ]
    return table(
        rows,
        ["figure", "ratio before", "ratio now", "change", "within 20%", "speed-adj.", "within", ""],
        {1, 2, 3, 5},
    )


def write(out_dir: Path, timestamp: str, data: dict[str, Any]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{timestamp}.json"
    text = json.dumps(data, indent=2, default=str)
    path.write_text(text)
    latest = out_dir / "latest.json"
    latest.write_text(text)
    return path, latest


def previous_run(out_dir: Path, backend: str) -> dict[str, Any] | None:
    """The newest earlier run of the same backend, complete enough to compare."""
    candidates = sorted(out_dir.glob("2*.json"), reverse=True) if out_dir.exists() else []
    for path in candidates:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("meta", {}).get("backend") == backend and data.get("figures"):
            return data
    return None
