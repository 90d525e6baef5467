"""The benchmark scripts' verdicts: PASS/FAIL per goal and the exit status, on fabricated timings.

No benchmark is run for real here (that is ``make bench``): each script's measuring functions are replaced by
fabricated timings with known verdicts, and the script's own ``main`` must print the right verdicts and return
0 only when every goal passed.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def load(monkeypatch):
    """Import ``benchmarks/<name>.py`` as a module (its sibling ``_goals`` importable, as when run as a script)."""
    monkeypatch.syspath_prepend(str(BENCH_DIR))

    def _load(name: str):
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH_DIR / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, mod)
        spec.loader.exec_module(mod)
        return mod

    return _load


# ---------------------------------------------------------------------------------------------- _goals


def test_goal_verdicts_at_and_around_the_limit(load):
    g = load("_goals")
    assert g.Goal("t", 1.15, "<=", 1.15).passed  # the limit itself passes
    assert not g.Goal("t", 1.1500001, "<=", 1.15).passed
    assert g.Goal("r", 0.9, ">=", 0.9).passed
    assert not g.Goal("r", 0.8999, ">=", 0.9).passed
    for bad in (float("nan"), float("inf"), -float("inf"), None):
        assert not g.Goal("x", bad, "<=", 1.0).passed, bad  # a broken measurement never passes
        assert not g.Goal("x", bad, ">=", 1.0).passed, bad
    with pytest.raises(ValueError, match="op"):
        g.Goal("x", 1.0, "<", 1.0)
    with pytest.raises(ValueError, match="limit"):
        g.Goal("x", 1.0, "<=", math.nan)
    assert g.Goal("s", 1.0, "<=", 2.0, smoke=True).verdict == "PASS (smoke)"


def test_busy_note(load):
    g = load("_goals")
    assert g.busy_note(load1=1.5, cpus=2) == ""
    assert "load average 5.0 on 2 cpus" in g.busy_note(load1=5.0, cpus=2)


def test_finish_marks_rows_of_a_busy_machine(load, monkeypatch, capsys):
    g = load("_goals")
    monkeypatch.setattr(g, "busy_note", lambda: "machine busy: test")
    assert g.finish("x.py", [g.Goal("t", 1.0, "<=", 1.15, detail="d")]) == 0  # the verdict stands
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| `x.py`")]
    assert rows == ["| `x.py` | t | 1x | <= 1.15x | PASS | d; machine busy: test |"]


def test_finish_exit_status_and_markdown(load, monkeypatch, tmp_path, capsys):
    g = load("_goals")
    monkeypatch.setattr(g, "busy_note", lambda: "")
    ok = g.Goal("fast enough", 1.05, "<=", 1.15, detail="a | b")
    bad = g.Goal("rate", 150.0, ">=", 200.0, unit=" img/s")
    md = tmp_path / "out" / "results.md"
    assert g.finish("x.py", [ok], md) == 0
    assert g.finish("y.py", [ok, bad], md) == 1
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" in out and "-> exit 1" in out
    lines = md.read_text().splitlines()
    assert lines[0].startswith("| script |") and lines.count(lines[0]) == 1  # header once, then appended rows
    rows = lines[2:]
    assert len(rows) == 3
    assert rows[0].startswith("| `x.py` | fast enough | 1.05x | <= 1.15x | PASS |") and "a \\| b" in rows[0]
    assert "| **FAIL** |" in rows[2] and "150 img/s" in rows[2]
    with pytest.raises(ValueError, match="no goal"):
        g.finish("z.py", [], None)


# ---------------------------------------------------------------------------------------------- scripts


@pytest.mark.parametrize(("epoch_s", "status"), [(1.10, 0), (1.20, 1)])
def test_bench_training_main_on_fabricated_timings(load, monkeypatch, capsys, epoch_s, status):
    bt = load("bench_training")
    monkeypatch.setattr(bt, "measure_epoch", lambda *a, **k: bt.Timing(epoch_s, epoch_s))
    monkeypatch.setattr(bt, "measure_floor", lambda *a, **k: bt.Timing(1.0, 1.0))
    threads = bt.torch.get_num_threads()
    try:  # one thread: tiny steps on a busy machine otherwise wait on each other
        assert bt.main(["--quick", "--repeats", "1", "--shapes", "demo", "--threads", "1"]) == status
    finally:
        bt.torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert ("FAIL (smoke)" in out) == bool(status) and f"{epoch_s:.3g}x <= 1.15x" in out
    # at the goal's sizes the verdict is not marked smoke
    g = bt.goal_for("paper", bt.Timing(1.2, 1.2), bt.Timing(1.0, 1.0), steps=80, handling_s=0.01, smoke=False)
    assert g.verdict == "FAIL" and abs(g.value - 1.2) < 1e-12


def test_bench_training_floor_does_the_same_steps(load):
    """The floor and the library's epoch end with identical weights (what main checks on every pair)."""
    import torch

    bt = load("bench_training")
    from cxrlib.config import load_settings

    s = load_settings("demo")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # restored below; tiny steps with two threads crawl on a busy machine
    try:
        _floor_vs_epoch(bt, s, torch)
    finally:
        torch.set_num_threads(threads)


def _floor_vs_epoch(bt, s, torch) -> None:
    tcfg = s.train.replace(batch_size=128)
    pcfg = s.projector.replace(in_dim=16, out_dim=16, hidden_dim=32)
    data = bt.make_set(600, 16, seed=3)
    tensors = bt.to_device(data, torch.device("cpu"))
    runs = [
        bt.Run(data, pcfg, s.loss.replace(clip_logit_scale_init=None), tcfg, torch.device("cpu"))
        for _ in "ab"
    ]
    bt.measure_epoch(runs[0], tensors, tcfg, 2, torch.device("cpu"))
    bt.measure_floor(runs[1], bt.preslice(runs[1], tensors, tcfg, 2), tcfg, torch.device("cpu"))
    same, worst = bt.same_state(runs[0].state(), runs[1].state())
    assert same, worst
    fresh = bt.Run(data, pcfg, s.loss.replace(clip_logit_scale_init=None), tcfg, torch.device("cpu"))
    moved, _ = bt.same_state(runs[0].state(), fresh.state())
    assert not moved  # the check can fail: training moved the weights away from the fresh state


def test_bench_embeddings_verdict(load):
    be = load("bench_embeddings")
    # 1000 images: pipeline 1.0 s vs model 0.9 s -> 0.9 (passes at the limit); 1.2 s -> 0.75 FAIL
    assert be.goal_for(1000, 1.0, 0.9, "", smoke=False).passed
    fail = be.goal_for(1000, 1.2, 0.9, "", smoke=False)
    assert not fail.passed and abs(fail.value - 0.75) < 1e-12
    assert not be.goal_for(1000, 0.0, 0.9, "", smoke=False).passed  # a zero time is no measurement


def _fake_metrics_worker(times: dict[str, float], extra_gb: float):
    def spawn(mode, n, seed, duplicates=True, env=None):
        res = {
            "time": times[mode],
            "cpu": times[mode],
            "extra_gb": extra_gb,
            "base_gb": 0.7,
            "peak_reset": True,
        }
        if mode in ("cxrlib", "naive"):
            res["metrics"] = {"i2t_R@1": 0.5, "n_unique_texts": n, "i2t_R@10": 0.9, "i2t_median_rank": 2.0}
            res["metrics"].update({k.replace("i2t", "t2i"): v for k, v in res["metrics"].items()})
            res["metrics"].update({"i2t_P@10_label": 0.6, "i2t_mAP@10_label": 0.4})
            if mode == "naive":
                res["metrics"]["i2t_R@1"] += times.get("naive_dev", 0.0)
        if mode == "cxrlib":
            res.update(jit_s=0.1, import_s=0.1)
        return res

    return spawn


@pytest.mark.parametrize(
    ("times", "extra_gb", "status", "failing"),
    [
        ({"floor": 10.0, "cxrlib": 14.0, "naive": 20.0}, 1.2, 0, None),
        ({"floor": 10.0, "cxrlib": 16.0, "naive": 20.0}, 1.2, 1, "time / N x N matmul floor"),
        ({"floor": 10.0, "cxrlib": 14.0, "naive": 20.0}, 1.6, 1, "extra memory"),
        ({"floor": 10.0, "cxrlib": 14.0, "naive": 20.0, "naive_dev": 0.01}, 1.2, 1, "deviation"),
    ],
)
def test_bench_metrics_main_on_fabricated_results(
    load, monkeypatch, capsys, times, extra_gb, status, failing
):
    bm = load("bench_metrics")
    monkeypatch.setattr(bm, "spawn", _fake_metrics_worker(times, extra_gb))
    # N = 1000: naive agreement only; N = 50,000: time + memory, realistic and distinct texts (no naive: > 8 GB)
    assert bm.main(["--sizes", "1000", "50000"]) == status
    out = capsys.readouterr().out
    verdicts = [ln for ln in out.splitlines() if ln.startswith("  PASS") or ln.startswith("  FAIL")]
    assert len(verdicts) == 5
    assert sum("distinct texts" in ln for ln in verdicts) == 2
    assert [ln for ln in verdicts if ln.startswith("  FAIL")] == (
        [] if failing is None else [ln for ln in verdicts if failing in ln]
    )


def test_bench_metrics_cases(load):
    bm = load("bench_metrics")
    assert bm.cases_for([10_000, 50_000], "both", 50_000) == [(10_000, True), (50_000, True), (50_000, False)]
    assert bm.cases_for([2_000], "distinct", 50_000) == [(2_000, False)]
    assert bm.cases_for([2_000, 5_000], "realistic", 5_000) == [(2_000, True), (5_000, True)]


def test_bench_metrics_memory_meter_sees_an_allocation(load):
    """The extra-memory measurement: ~200 MB touched inside the block shows as ~0.2 GB, nothing outside does."""
    import numpy as np

    bm = load("bench_metrics")
    if not Path("/proc/self/status").exists():
        pytest.skip("no /proc (not Linux)")
    before = np.ones(25_000_000)  # 200 MB allocated and freed BEFORE the block: must not count
    del before
    with bm.Meter() as m:
        a = np.ones(25_000_000)
        a += 1
    del a
    assert 0.15 < m.extra_gb < 0.35, m.extra_gb


@pytest.mark.parametrize(("png_s", "status"), [(0.4, 0), (0.6, 1)])
def test_bench_phantom_main_on_fabricated_timings(load, monkeypatch, capsys, png_s, status):
    bp = load("bench_phantom")
    monkeypatch.setattr(bp, "pin_one_core", lambda: "not pinned (test)")
    monkeypatch.setattr(bp, "time_render", lambda r, st, encode: (png_s if encode else 0.2, 0.1))
    monkeypatch.setattr(bp, "time_corpus", lambda n, size, seed: (1.0, 150))
    # 100 images in 0.4 s = 250 img/s (PASS), in 0.6 s = 167 img/s (FAIL)
    assert bp.main(["--images", "100", "--patients", "10"]) == status
    assert ("FAIL" in capsys.readouterr().out) == bool(status)
    assert not bp.goal_for(500.0, 128, "", smoke=False).passed  # another size: the goal is not checked
