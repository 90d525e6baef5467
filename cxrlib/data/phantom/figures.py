"""Tables and figures of the phantom corpus: finding counts per severity and example images per finding.

Both read a manifest returned by :func:`~cxrlib.data.phantom.generate_corpus` (notebook 01 shows them).
"""

from __future__ import annotations

import json
import textwrap
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
    df: pd.DataFrame, out_path: str | Path, per_finding: int = 3, seed: int = 0, excerpt_chars: int = 90
) -> Figure:
    """A grid: one row per finding (plus normal), ``per_finding`` example images with report excerpts.

    Examples are chosen by a stated rule: studies whose only finding is that one (cleanest view), one per
    severity where available, then random with ``seed``. Returns the matplotlib Figure (also saved).
    """
    import matplotlib.pyplot as plt

    from cxrlib.paths import resolve

    rng = np.random.default_rng(seed)
    rows = [("normal", df[df["label"] == 0])]
    n_find = df[[f"finding_{f}" for f in FINDINGS]].sum(axis=1)
    for f in FINDINGS:
        rows.append((f, df[(df[f"finding_{f}"] == 1) & (n_find == 1)]))
    fig, axes = plt.subplots(
        len(rows), per_finding, figsize=(3.2 * per_finding, 3.55 * len(rows)), squeeze=False
    )
    for r, (name, sub) in enumerate(rows):
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
            ax = axes[r, c]
            ax.set_axis_off()
            if c >= len(picks):
                continue
            row = df.loc[picks[c]]
            ax.imshow(np.asarray(Image.open(resolve(row["image_path"]))), cmap="gray", vmin=0, vmax=255)
            detail = json.loads(row["finding_detail"]).get(name, {})
            head = (
                name
                if name == "normal"
                else f"{name}: {detail.get('severity', '')} {detail.get('side', '')}".strip()
            )
            text = row["text"]
            excerpt = text if len(text) <= excerpt_chars else text[: excerpt_chars - 1] + "…"
            ax.set_title(head + "\n" + "\n".join(textwrap.wrap(excerpt, 38)), fontsize=7, loc="left")
    fig.suptitle("Phantom corpus (SYNTHETIC images and reports): examples per finding", fontsize=11)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    return fig
