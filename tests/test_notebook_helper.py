"""cxrlib.notebook: the notebooks' one-call set-up and their table/figure writers."""

from __future__ import annotations

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
    assert nb.write_metrics("local-dir:/a/b", {"k": 1}).name == "02_local-dir__a_b.json"
    assert json.loads((nb.metrics / "02_local-dir__a_b.json").read_text()) == {"k": 1}
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
