"""Comparison tables of several models' :func:`~cxrlib.metrics.retrieval_metrics` (notebooks 02 and 03)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

__all__ = ["TABLE_KEYS", "metrics_table"]


#: The columns of the comparison tables of notebooks 02 and 03 (for ``ks=(1, 5, 10)``).
TABLE_KEYS: tuple[str, ...] = (
    "i2t_R@1",
    "i2t_R@5",
    "i2t_R@10",
    "t2i_R@1",
    "t2i_R@5",
    "t2i_R@10",
    "i2t_P@10_label",
    "t2i_P@10_label",
    "i2t_mAP@10_label",
    "t2i_mAP@10_label",
)


def metrics_table(
    results: Mapping[str, Mapping[str, float]], keys: Sequence[str] = TABLE_KEYS, digits: int = 3
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Several models' :func:`retrieval_metrics` as tables: one row per model, one column per key.

    Returns ``(numbers, text)``: ``numbers`` has the point value and, where the bootstrap ran, ``<key>_lo`` /
    ``<key>_hi`` columns (rounded to ``digits``); ``text`` has one column per key formatted as
    ``"0.412 [0.380, 0.447]"`` (or the bare value without CIs) for markdown and the notebooks.
    A key missing from a model's results raises ``KeyError`` naming the model and the key.
    """
    if not results:
        raise ValueError("results is empty; pass {model name: retrieval_metrics(...)}.")
    num_rows, txt_rows = {}, {}
    for name, res in results.items():
        missing = [k for k in keys if k not in res]
        if missing:
            raise KeyError(
                f"{name!r} has no metric(s) {missing}; was retrieval_metrics called with these ks?"
            )
        num, txt = {}, {}
        for k in keys:
            v = round(float(res[k]), digits)
            num[k] = v
            if f"{k}_lo" in res:
                lo, hi = round(float(res[f"{k}_lo"]), digits), round(float(res[f"{k}_hi"]), digits)
                num[f"{k}_lo"], num[f"{k}_hi"] = lo, hi
                txt[k] = f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
            else:
                txt[k] = f"{v:.{digits}f}"
        num_rows[name], txt_rows[name] = num, txt
    numbers = pd.DataFrame.from_dict(num_rows, orient="index")
    text = pd.DataFrame.from_dict(txt_rows, orient="index")
    numbers.index.name = text.index.name = "model"
    return numbers, text
