"""The worked solutions of the notebooks' exercises (``solutions/``) run and land in their stated ranges.

One reduced SYNTHETIC lab (:func:`solutions._lab.build_small`: 900 phantom patients at 64 px, and a
constructed embedding space from the phantom's ground truth instead of a pretrained demo backbone, which
would cost minutes of CPU) is built once in a temporary folder; every exercise then runs on it through the
library, as ``python -m solutions.exNN_*`` does (exercise 02.3 pretrains a backbone and runs only on a full
run, ``--run``). Each exercise asserts its own expected ranges
(:func:`solutions._lab.expect`), so a change in the library that moves a result out of its range fails here,
naming the value and the range. The lab never touches ``results/`` or the shared ``.cache/``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

from cxrlib.paths import REPO_ROOT

pytestmark = pytest.mark.slow


def _load_solutions():
    """Import the ``solutions`` package from the repository (it is not installed with cxrlib)."""
    if "solutions" not in sys.modules:
        init = REPO_ROOT / "solutions" / "__init__.py"
        spec = importlib.util.spec_from_file_location(
            "solutions", init, submodule_search_locations=[str(init.parent)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["solutions"] = module
        spec.loader.exec_module(module)
    return {
        name: importlib.import_module(f"solutions.{name}")
        for name in ("_lab", "ex01_data", "ex02_metrics", "ex03_finetuning", "ex03_supcon", "ex04_maps")
    }


MODULES = _load_solutions()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The small lab; it sets torch to one thread (run.num_threads = 1), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield MODULES["_lab"].build_small(tmp_path_factory.mktemp("solutions-lab"))
    finally:
        torch.set_num_threads(threads)


CASES = [
    (module, name)
    for module in ("ex01_data", "ex02_metrics", "ex03_finetuning", "ex04_maps")
    for name in MODULES[module].EXERCISES
]


@pytest.mark.parametrize(("module", "name"), CASES, ids=[f"{m}.{n}" for m, n in CASES])
def test_exercise_lands_in_its_range(lab, module: str, name: str) -> None:
    fn = MODULES[module].EXERCISES[name]
    if "small" not in getattr(fn, "sizes", ("small", "full")):
        pytest.skip(f"full size only: {fn.why_not}")
    result = fn(lab)
    assert result and all(isinstance(v, float) for v in result.values())


def test_supcon_by_hand_matches_the_library() -> None:
    out = MODULES["ex03_supcon"].exercise_6()
    assert out["max_value_diff"] < 1e-10 and out["max_grad_diff"] < 1e-10


def test_supcon_by_hand_can_fail() -> None:
    """A wrong SupCon (positives in the denominator only, i.e. self-contrast kept) is caught by the check."""
    import torch

    from cxrlib.losses import SupConLoss

    ex = MODULES["ex03_supcon"]
    u, y = ex.random_batch(12, 4, 2, seed=3)
    wrong = -(torch.log_softmax(u @ u.T / 0.1, dim=1) * (y[:, None] == y[None, :])).sum(1).mean()
    assert abs(float(wrong - SupConLoss(0.1)(u, y))) > 1e-3
    assert abs(float(ex.supcon_by_hand(u, y, 0.1) - SupConLoss(0.1)(u, y))) < 1e-12


def test_expect_names_the_value_and_the_range() -> None:
    lab_mod = MODULES["_lab"]
    r = lab_mod.Range(small=(0.0, 1.0), full=(0.4, 0.6))
    assert lab_mod.expect("small", "x", 0.9, r, "why") == 0.9
    with pytest.raises(
        AssertionError, match=r"x = 0\.9 is outside the expected range \[0\.4, 0\.6\] for the full"
    ):
        lab_mod.expect("full", "x", 0.9, r, "why")
    with pytest.raises(ValueError, match="lab size"):
        r.at("medium")


def test_open_run_names_the_command_when_the_run_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="python -m cxrlib.reproduce --profile demo --out"):
        MODULES["_lab"].open_run(tmp_path / "nothing")


def test_i2t_recall_by_hand_on_a_constructed_case() -> None:
    """Two identical reports: kept apart, the own one ties with its copy and loses R@1; merged, it wins."""
    import numpy as np

    ex = MODULES["ex02_metrics"]
    img = np.eye(3, dtype=np.float32)
    txt = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0]], dtype=np.float32)
    assert ex.i2t_recall_at_1_by_hand(img, txt, merge_duplicates=False) == pytest.approx(1 / 3)
    assert ex.i2t_recall_at_1_by_hand(img, txt, merge_duplicates=True) == pytest.approx(2 / 3)
