"""cxrlib.notebook: the notebooks' one-call set-up and their table/figure writers."""

from __future__ import annotations

import hashlib
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from cxrlib import notebook, paths  # noqa: E402
from cxrlib.config import ConfigError  # noqa: E402


@pytest.fixture
def results_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "results_dir", lambda profile, *p: tmp_path.joinpath("results", profile, *p))
    monkeypatch.setattr(
        paths, "profile_cache_dir", lambda profile, *p: tmp_path.joinpath("cache", profile, *p)
    )
    return tmp_path


def test_start_notebook_builds_settings_folders_and_says_what_differs(results_in_tmp, capsys):
    nb = notebook.start_notebook("03", "demo", {"loss": {"w_bce": 0.5}})
    assert nb.settings.loss.w_bce == 0.5 and nb.settings.run.seed == 0
    for d in (nb.tables, nb.figures, nb.metrics):
        assert d.is_dir() and d.is_relative_to(results_in_tmp)
    out = capsys.readouterr().out
    assert '"w_bce": 0.5' in out and "clip_logit_scale_init" in out and "SYNTHETIC" in out


def test_bad_override_fails_at_the_start(results_in_tmp):
    with pytest.raises(ConfigError, match=r"loss\.w_bce = 'x'"):
        notebook.start_notebook("03", "demo", {"loss": {"w_bce": "x"}})


def test_writers_prefix_the_notebook_and_say_synthetic(results_in_tmp):
    nb = notebook.start_notebook("02", "demo")
    df = pd.DataFrame({"a": [1.23456, 2.0]}, index=["x", "y"])
    md = nb.write_table("t", df.round(1), "Caption", csv=df)
    assert md.name == "02_t.md" and md.read_text().startswith("Caption (SYNTHETIC data)\n\n|")
    assert "1.23456" in (nb.tables / "02_t.csv").read_text() and "1.23456" not in md.read_text()
    h = hashlib.sha256(b"local-dir:/a/b").hexdigest()[:8]
    assert nb.write_metrics("local-dir:/a/b", {"k": 1}).name == f"02_b-{h}.json"  # backbones.slug
    assert json.loads((nb.metrics / f"02_b-{h}.json").read_text()) == {"k": 1}
    fig = plt.figure()
    assert nb.save_figure(fig, "f") is None and (nb.figures / "02_f.png").stat().st_size > 0


def test_warnings_are_printed_recorded_and_cleared(results_in_tmp, capsys):
    nb = notebook.start_notebook("02", "demo")
    nb.warn(["WARNING: x looks random"])
    assert "WARNING: x looks random" in capsys.readouterr().out
    path = nb.tables.parent / "warnings" / "02.txt"
    assert path.read_text() == "WARNING: x looks random\n"
    from cxrlib.reproduce import write_summary

    summary = write_summary("demo", nb.tables.parent, {}, {}).read_text()
    assert "## ⚠ Warnings" in summary and "- notebook 02: WARNING: x looks random" in summary
    nb.warn([])
    assert not path.exists()


def test_metrics_and_checkpoint_paths_follow_the_one_slug_rule(results_in_tmp):
    from cxrlib.backbones import slug

    nb = notebook.start_notebook("03", "demo")
    # the demo's committed file names do not move
    assert nb.write_metrics("demo", {}).name == "03_demo.json"
    assert nb.write_metrics("multitask", {}).name == "03_multitask.json"
    assert nb.checkpoint_dir("demo") == nb.work_dir / "checkpoints" / "demo-multitask"
    # two bundles named y: separate files and folders, each directly under its parent, no ':' anywhere
    a, b = "local-dir:/exports/clip/y", "local-dir:/exports/biomedclip/y"
    ma, mb = nb.write_metrics(a, {"n": 1}), nb.write_metrics(b, {"n": 2})
    assert ma != mb and ma.parent == mb.parent == nb.metrics and ":" not in ma.name + mb.name
    assert json.loads(ma.read_text()) == {"n": 1} and json.loads(mb.read_text()) == {"n": 2}
    ca, cb = nb.checkpoint_dir(a), nb.checkpoint_dir(b)
    assert ca != cb and ca.parent == cb.parent == nb.work_dir / "checkpoints"
    assert ca.name == f"{slug(a)}-multitask" and ":" not in ca.name


def test_labels_and_relabel_give_short_unique_row_labels(results_in_tmp):
    a, b = "local-dir:/exports/clip/y", "local-dir:/exports/biomedclip/y"
    c = "hf-hub:org/biomedclip-tiny"
    nb = notebook.start_notebook(
        "02", "demo", {"eval": {"backbones": [a, b, c], "finetune": c, "also_finetune": []}}
    )
    ha, hb = (hashlib.sha256(n.encode()).hexdigest()[:8] for n in (a, b))
    assert nb.labels == {
        a: f"y [{ha}]",
        b: f"y [{hb}]",
        c: "biomedclip-tiny",
        f"{c}+multitask": "biomedclip-tiny+multitask",
    }
    assert nb.label(c) == "biomedclip-tiny" and nb.label("demo") == "demo"
    assert list(nb.relabel({a: 1, c: 2, "chance": 3})) == [f"y [{ha}]", "biomedclip-tiny", "chance"]
    df = pd.DataFrame(
        {"x": [1, 2, 3]}, index=pd.MultiIndex.from_tuples([(a, "all"), (b, "all"), (c, "normal")])
    )
    out = nb.relabel(df)
    assert list(out.index) == [(f"y [{ha}]", "all"), (f"y [{hb}]", "all"), ("biomedclip-tiny", "normal")]
    assert list(out["x"]) == [1, 2, 3] and list(df.index.get_level_values(0)) == [a, b, c]  # input unchanged
    with pytest.raises(TypeError, match="relabel takes"):
        nb.relabel([a])
    demo = notebook.start_notebook("02", "demo")
    assert demo.relabel({"demo-random": 1, "demo": 2}) == {"demo-random": 1, "demo": 2}  # demo rows unchanged
