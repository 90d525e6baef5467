"""Slide-readability checks for matplotlib figures, shared by the figure tests (test_viz, test_phantom).

:func:`layout_problems` draws a figure and lists, in words, every text smaller than the minimum size, every
pair of texts whose boxes overlap, and every text that runs into an image panel other than its own axes.
"""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

__all__ = ["layout_problems"]


def _tick_labels(fig: Figure) -> set[int]:
    """ids of every tick label Text of every axes (drawn or not)."""
    out: set[int] = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                out |= {id(tick.label1), id(tick.label2)}
    return out


def _shrunk(b: Bbox, px: float = 1.0) -> Bbox:
    return Bbox.from_extents(b.x0 + px, b.y0 + px, b.x1 - px, b.y1 - px)


def layout_problems(fig: Figure, min_points: float = 9.0) -> list[str]:
    """Texts of ``fig`` below ``min_points``, overlapping texts, and texts over another axes' image."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ticks = _tick_labels(fig)
    texts = [
        t
        for t in fig.findobj(Text)
        if t.get_visible()
        and t.get_text().strip()
        and (t.axes is None or t.axes.get_visible())
        and not (id(t) in ticks and t.axes is not None and not t.axes.axison)  # ticks of an axis turned off
    ]
    problems = [
        f"text {t.get_text()[:40]!r} is {t.get_fontsize():.1f} pt (< {min_points} pt)"
        for t in texts
        if t.get_fontsize() < min_points - 1e-9
    ]
    boxes = [(t, _shrunk(t.get_window_extent(renderer))) for t in texts if id(t) not in ticks]
    for i, (a, ba) in enumerate(boxes):
        for b, bb in boxes[i + 1 :]:
            if ba.overlaps(bb):
                problems.append(f"texts overlap: {a.get_text()[:30]!r} and {b.get_text()[:30]!r}")
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.images]
    for t, bt in boxes:
        for ax in panels:
            if ax is t.axes:
                continue
            if bt.overlaps(_shrunk(ax.get_window_extent(renderer))):
                problems.append(f"text {t.get_text()[:30]!r} runs into an image panel")
    return problems
