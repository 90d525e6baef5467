"""The README's demo section is generated from the committed results and is up to date."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cxrlib.demo_report import BEGIN, END, results_markdown, update_readme
from cxrlib.paths import REPO_ROOT


def test_readme_demo_section_matches_the_committed_results():
    assert not update_readme(write=False), (
        "README.md's demo results differ from results/demo/: run `python -m cxrlib.demo_report --write`"
    )


def _tiny_results(root: Path) -> Path:
    t = root / "tables"
    t.mkdir(parents=True)
    (root / "metrics").mkdir()
    (root / "metrics" / "03_multitask.json").write_text(json.dumps({"backbone": "demo"}))
    cols = {}
    for k, v in (("i2t_R@1", 0.05), ("i2t_R@10", 0.4), ("t2i_R@1", 0.1), ("t2i_R@10", 0.5)):
        cols[k], cols[f"{k}_lo"], cols[f"{k}_hi"] = [v, v + 0.1], [v - 0.01, v + 0.09], [v + 0.01, v + 0.11]
    pd.DataFrame({"model": ["demo", "demo+multitask"], **cols}).to_csv(t / "03_comparison.csv", index=False)
    ci = "95 % CI of the change"
    pd.DataFrame(
        {
            "metric": ["i2t_R@10", "t2i_R@10", "t2i_R@1"],
            "demo": [0.4, 0.5, 0.1],
            "demo+multitask": [0.5, 0.45, 0.1],
            "change": [0.1, -0.05, 0.0],
            ci: ["[+0.050, +0.150]", "[-0.080, -0.020]", "[-0.010, +0.010]"],
            "p(not better)": [0.0, 1.0, 0.5],
            "verdict": ["better", "worse", "no difference shown"],
        }
    ).to_csv(t / "03_paired.csv", index=False)
    pd.DataFrame(
        {"config": ["CLIP only", "all three"], "i2t_R@10": ["0.400 ± 0.010", "0.500 ± 0.020"]}
    ).to_csv(t / "03_ablation.csv", index=False)
    pd.DataFrame(
        {
            "erank_image": [40.0, 20.0],
            "erank_text": [30.0, 15.0],
            "cos_same_label": [0.2, 0.9],
            "cos_diff_label": [0.0, 0.7],
        },
        index=["before (demo)", "after (demo+multitask)"],
    ).to_csv(t / "04_geometry.csv")
    pd.DataFrame(
        {
            "silhouette_image": [0.1, 0.4],
            "silhouette_text": [0.3, 0.7],
            "silhouette_joint": [0.2, 0.5],
            "knn_acc_image": [0.8, 0.9],
            "knn_acc_text": [0.9, 1.0],
            "modality_gap": [0.3, 0.05],
        },
        index=["before (demo)", "after (demo+multitask)"],
    ).to_csv(t / "04_cluster_scores.csv")
    pd.DataFrame({"mean |gap|": [0.06, 0.08]}, index=["demo", "demo+multitask"]).to_csv(t / "03_balance.csv")
    (root / "run_times.json").write_text(json.dumps({"01_data": 10.0, "02_eval": 20.4}))
    return root


def test_section_reads_every_number_and_verdict_from_the_tables(tmp_path: Path):
    md = results_markdown(_tiny_results(tmp_path))
    # the main table with CIs, the roles, the ablation with the untuned backbone first
    assert "| `demo` (domain stand-in, BiomedCLIP's role) | 0.050 [0.040, 0.060] | 0.400 [0.390, 0.410]" in md
    assert "| untuned `demo` | 0.400 |" in md and "| all three | 0.500 ± 0.020 |" in md
    # each verdict lands in its own clause, with the change and its CI
    line = next(x for x in md.splitlines() if x.startswith("- `demo+multitask` vs `demo`"))
    better, worse, same = line.split("; worse")[0], line.split("; worse")[1].split("; not shown")[0], line
    assert "i2t_R@10 +0.100 [+0.050, +0.150]" in better and "t2i_R@10" not in better
    assert "t2i_R@10 -0.050 [-0.080, -0.020]" in worse
    assert "not shown to differ (the paired 95 % CI includes 0) on t2i_R@1 +0.000" in same
    assert "40.00 → 20.00" in md and "0.00 → 0.70" in md and "+0.70 in different-label cosine" in md
    assert "`demo` 0.060, `demo+multitask` 0.080" in md
    assert "01 10 s, 02 20 s (total 30 s)" in md


def test_missing_table_names_the_file_and_the_fix(tmp_path: Path):
    root = _tiny_results(tmp_path)
    (root / "tables" / "03_ablation.csv").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"03_ablation\.csv is missing.*cxrlib\.reproduce --profile demo"
    ):
        results_markdown(root)


def test_update_replaces_only_the_marked_section(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{BEGIN}\nold numbers\n{END}\nafter\n")
    assert update_readme(readme, _tiny_results(tmp_path / "r"))
    text = readme.read_text()
    assert (
        text.startswith("# x\n\nbefore\n") and text.endswith(f"{END}\nafter\n") and "old numbers" not in text
    )
    assert not update_readme(readme, tmp_path / "r")  # idempotent
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="no markers for this section"):
        update_readme(readme, tmp_path / "r")


def test_the_committed_readme_carries_the_markers_once():
    text = (REPO_ROOT / "README.md").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
