"""Goals of the benchmark scripts: one verdict per goal, PASS/FAIL lines, markdown rows and the exit status.

Every ``benchmarks/bench_*.py`` measures its ratios, wraps each in a :class:`Goal` and ends with
:func:`finish`, which prints

- one ``PASS``/``FAIL`` line per goal (``FAIL`` also for a value that is not a finite number: a measurement
  that went wrong never passes),
- one markdown table row per goal (``| script | goal | measured | limit | verdict | details |``, the row format
  of the README's benchmark table), and appends those rows to ``--markdown FILE`` when given (the file gets
  the header first when it does not exist yet: ``make bench`` deletes it and lets every script append),

and returns the exit status: 0 when every goal passed, 1 when any failed. When the machine was busy (1-minute
load average above the CPU count at the script's start or end) every row says so: the verdict stands as
measured, but wall-clock ratios taken while other processes compete for the cores are unreliable. A script run at ``--quick`` sizes
still prints its verdicts, marked ``smoke``: a quick run checks that the script works, not the goal, so its
rows say so and cannot stand in for a measurement at the goal's size.

This module is imported by the scripts as ``_goals`` (``python benchmarks/bench_x.py`` puts ``benchmarks/`` on
the import path by itself) and has no dependency beyond the standard library.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["Goal", "finish", "machine_line", "busy_note", "MARKDOWN_HEADER", "add_common_arguments"]

#: Header of the markdown table that :func:`finish` appends rows to.
MARKDOWN_HEADER = "| script | goal | measured | limit | verdict | details |\n|:--|:--|--:|--:|:--|:--|\n"

_OPS = ("<=", ">=")


@dataclass(frozen=True)
class Goal:
    """One goal: ``value`` (a ratio or a rate) must be ``op`` ``limit``.

    ``name``: what is compared, e.g. ``"training epoch / forward+backward floor"``; ``unit``: printed after the
    numbers (``"x"``, ``" GB"``, ``" img/s"``); ``detail``: the measured quantities behind the ratio (seconds,
    sizes), so that a FAIL can be read without rerunning; ``smoke``: measured at quick sizes, not the goal's.
    """

    name: str
    value: float
    op: str
    limit: float
    unit: str = "x"
    detail: str = ""
    smoke: bool = False

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"Goal {self.name!r}: op must be one of {_OPS}, got {self.op!r}")
        if not (isinstance(self.limit, int | float) and math.isfinite(self.limit)):
            raise ValueError(f"Goal {self.name!r}: limit must be a finite number, got {self.limit!r}")

    @property
    def passed(self) -> bool:
        """True when ``value op limit`` holds; a NaN/inf/missing value never passes."""
        v = self.value
        if not isinstance(v, int | float) or not math.isfinite(v):
            return False
        return v <= self.limit if self.op == "<=" else v >= self.limit

    @property
    def verdict(self) -> str:
        """``"PASS"`` or ``"FAIL"``, with `` (smoke)`` appended for a quick-size run."""
        return ("PASS" if self.passed else "FAIL") + (" (smoke)" if self.smoke else "")

    def _num(self, x: float) -> str:
        return f"{x:.3g}{self.unit}" if abs(x) < 1000 else f"{x:.0f}{self.unit}"

    def line(self) -> str:
        """``"PASS  name: 1.04x <= 1.15x (detail)"``."""
        tail = f"  ({self.detail})" if self.detail else ""
        return (
            f"{self.verdict:<12} {self.name}: {self._num(self.value)} {self.op} {self._num(self.limit)}{tail}"
        )

    def markdown_row(self, script: str) -> str:
        """One row of :data:`MARKDOWN_HEADER`'s table (``|`` in the texts escaped)."""
        cells = [
            f"`{script}`",
            self.name,
            self._num(self.value),
            f"{self.op} {self._num(self.limit)}",
            f"**{self.verdict}**" if not self.passed else self.verdict,
            self.detail,
        ]
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


_START_LOAD: list[float] = []


def _load1() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def machine_line() -> str:
    """CPU count, load average and platform: printed first by every script (timings depend on them). Also
    records the 1-minute load average for :func:`busy_note`."""
    _START_LOAD.append(_load1())
    load = " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return f"cpus={os.cpu_count()}, load average={load}, python {platform.python_version()}, {platform.machine()}"


def busy_note(load1: float | None = None, cpus: int | None = None) -> str:
    """A warning when the machine was busy: the 1-minute load average (the larger of the script's start and
    now, unless ``load1`` is given) above the CPU count means other processes took CPU time from the measured
    ones, and wall-clock timings (and so the ratios) are unreliable. ``""`` when the machine was not busy."""
    load1 = max([*_START_LOAD, _load1()]) if load1 is None else load1
    cpus = cpus or os.cpu_count() or 1
    if not (load1 > cpus):
        return ""
    return f"machine busy: 1-min load average {load1:.1f} on {cpus} cpus; timings unreliable, rerun when idle"


def add_common_arguments(ap) -> None:
    """``--quick`` and ``--markdown FILE``, the two options every script shares (``ap``: an ArgumentParser)."""
    ap.add_argument(
        "--quick", action="store_true", help="smoke test at small sizes: verdicts are marked 'smoke'"
    )
    ap.add_argument(
        "--markdown",
        type=Path,
        default=None,
        metavar="FILE",
        help="append one markdown table row per goal to FILE (header first when FILE is new)",
    )


def finish(
    script: str, goals: Sequence[Goal], markdown: Path | None = None, notes: Sequence[str] = ()
) -> int:
    """Print the verdicts and markdown rows of ``goals`` (and ``notes``), append the rows to ``markdown``.

    Returns the exit status: 0 when every goal passed, 1 otherwise. No goal at all is an error (a script that
    checks nothing must not report success).
    """
    if not goals:
        raise ValueError(f"{script}: no goal was measured; nothing to report")
    busy = busy_note()
    if busy:
        notes = [*notes, busy]
        goals = [replace(g, detail=f"{g.detail}; {busy}" if g.detail else busy) for g in goals]
    print("goals:")
    for g in goals:
        print("  " + g.line())
    for note in notes:
        print("  note: " + note)
    rows = [g.markdown_row(script) for g in goals]
    print("markdown rows:")
    for r in rows:
        print(r)
    if markdown is not None:
        markdown = Path(markdown)
        markdown.parent.mkdir(parents=True, exist_ok=True)
        new = not markdown.exists() or markdown.stat().st_size == 0
        with markdown.open("a", encoding="utf-8") as fh:
            if new:
                fh.write(MARKDOWN_HEADER)
            fh.write("\n".join(rows) + "\n")
    failed = [g for g in goals if not g.passed]
    print(
        f"{script}: {len(goals) - len(failed)}/{len(goals)} goals passed" + (" -> exit 1" if failed else "")
    )
    return 1 if failed else 0
