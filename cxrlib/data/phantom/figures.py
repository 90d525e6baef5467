"""Tables and figures of the phantom corpus: finding counts per severity and example images per finding.

Both read a manifest returned by :func:`~cxrlib.data.phantom.generate_corpus` (notebook 01 shows them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image

from cxrlib.data.phantom.findings import FINDINGS, SEVERITIES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["findings_table", "plot_finding_examples"]


def findings_table(df: pd.DataFrame) -> pd.DataFrame:
    """Counts per finding and severity (rows: findings; columns: severities, total, % of studies)."""
    recs: list[dict[str, str]] = []
    for detail in df["finding_detail"]:
        for name, attrs in json.loads(detail).items():
            recs.append({"finding": name, "severity": attrs["severity"]})
    counts = pd.DataFrame(recs, columns=["finding", "severity"])
    table = counts.pivot_table(index="finding", columns="severity", aggfunc="size", fill_value=0)
    sev_order = [s for f in FINDINGS for s in SEVERITIES[f]]
    cols = [c for c in dict.fromkeys(sev_order) if c in table.columns]
    table = table.reindex(index=[f for f in FINDINGS if f in table.index], columns=cols).fillna(0).astype(int)
    table["total"] = table.sum(axis=1)
    table["% of studies"] = (100.0 * table["total"] / len(df)).round(1)
    normal = pd.DataFrame(
        {
            "total": [int((df["label"] == 0).sum())],
            "% of studies": [round(100.0 * (df["label"] == 0).mean(), 1)],
        },
        index=["(normal)"],
    )
    out = pd.concat([table, normal]).fillna(0)
    for c in cols:
        out[c] = out[c].astype(int)
    out["total"] = out["total"].astype(int)
    out.index.name = "finding"
    return out


def plot_finding_examples(
    df: pd.DataFrame,
    out_path: str | Path,
    per_finding: int = 3,
    seed: int = 0,
    excerpt_chars: int = 90,
    findings_per_row: int = 2,
) -> Figure:
    """A grid of example images per finding (plus normal), each under its severity and a report excerpt.

    Examples are chosen by a stated rule: studies whose only finding is that one (cleanest view), one per
    severity where available, then random with ``seed``. ``findings_per_row`` findings share a grid row
    (``per_finding`` panels each), so the eight groups fit a slide-shaped figure; every text is 9 pt and sits
    in a band of its own above its image (:func:`cxrlib.viz.galleries.plot_example_grid`). Returns the
    matplotlib Figure (also saved).
    """
    from cxrlib.paths import resolve
    from cxrlib.viz.galleries import plot_example_grid

    if int(per_finding) != per_finding or per_finding < 1:
        raise ValueError(f"per_finding must be a positive integer, got {per_finding!r}")
    if int(findings_per_row) != findings_per_row or findings_per_row < 1:
        raise ValueError(f"findings_per_row must be a positive integer, got {findings_per_row!r}")
    rng = np.random.default_rng(seed)
    rows = [("normal", df[df["label"] == 0])]
    n_find = df[[f"finding_{f}" for f in FINDINGS]].sum(axis=1)
    for f in FINDINGS:
        rows.append((f, df[(df[f"finding_{f}"] == 1) & (n_find == 1)]))
    images: list[np.ndarray | None] = []
    headers: list[str] = []
    texts: list[str] = []
    for name, sub in rows:
        picks: list[int] = []
        if name != "normal" and len(sub):
            for sev in SEVERITIES[name]:
                cand = [
                    i
                    for i, d in zip(sub.index, sub["finding_detail"], strict=True)
                    if json.loads(d)[name]["severity"] == sev
                ]
                if cand:
                    picks.append(int(rng.choice(cand)))
        rest = [i for i in sub.index if i not in picks]
        if rest:
            picks += [int(i) for i in rng.choice(rest, size=min(len(rest), per_finding), replace=False)]
        picks = picks[:per_finding]
        for c in range(per_finding):
            if c >= len(picks):  # keep the group's panels aligned in its row
                images.append(None)
                headers.append(name if c == 0 else "")
                texts.append("(no example)" if c == 0 else "")
                continue
            row = df.loc[picks[c]]
            images.append(np.asarray(Image.open(resolve(row["image_path"]))))
            detail = json.loads(row["finding_detail"]).get(name, {})
            headers.append(
                name
                if name == "normal"
                else f"{name}: {detail.get('severity', '')} {detail.get('side', '')}".strip()
            )
            text = row["text"]
            texts.append(text if len(text) <= excerpt_chars else text[: excerpt_chars - 1] + "…")
    out_path = Path(out_path)
    return plot_example_grid(
        images,
        headers,
        texts,
        out_path,
        ncols=per_finding * int(findings_per_row),
        max_lines=4,
        title="Phantom corpus (SYNTHETIC images and reports): examples per finding",
        panel=2.2,
        dpi=110,
    )
