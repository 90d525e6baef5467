"""cxrlib.parallel: independent trainings side by side give the same numbers as one after another."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from test_training import FAST, PROJ, make_set

from cxrlib.config import LossConfig, RunConfig, TrainConfig
from cxrlib.evaluation import _ablation_run, run_loss_ablation
from cxrlib.parallel import JobError, one_thread, run_jobs
from cxrlib.training import train_projector

KEYS = ("i2t_R@1", "t2i_R@5", "i2t_mAP@5_label")


@pytest.fixture(scope="module")
def sets():
    return make_set(256, 0, "train"), make_set(96, 1, "val"), make_set(96, 2, "test")


def _jobs(sets, seeds):
    tr, va, te = sets
    cfg = FAST.replace(epochs=4)
    return [(tr, va, te, PROJ, LossConfig(), cfg.replace(seed=s), (1, 5), KEYS) for s in seeds]


def test_workers_change_no_number(sets):
    jobs = _jobs(sets, [0, 1, 2])
    here = run_jobs(_ablation_run, jobs, workers=1, progress=False)
    side_by_side = run_jobs(_ablation_run, jobs, workers=2, progress=False)
    assert here == side_by_side  # same floats, same order
    assert len({h["i2t_R@1"] for h in here} | {h["best_epoch"] for h in here}) > 1  # the seeds differ


def test_a_job_runs_at_one_thread_and_the_states_are_restored(sets):
    torch.set_num_threads(2)
    random.seed(5)
    np.random.seed(5)  # noqa: NPY002
    torch.manual_seed(5)
    before = (random.random(), np.random.random(), torch.rand(1).item())  # noqa: NPY002
    random.seed(5)
    np.random.seed(5)  # noqa: NPY002
    torch.manual_seed(5)
    run_jobs(_threads_seen, [(), ()], workers=1, progress=False)
    after = (random.random(), np.random.random(), torch.rand(1).item())  # noqa: NPY002
    assert after == before  # the jobs' seeding did not leak into this process
    assert torch.get_num_threads() == 2
    assert run_jobs(_threads_seen, [(), ()], workers=2, progress=False) == [1, 1]


def _threads_seen() -> int:
    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002
    return torch.get_num_threads()


def _fails(i: int) -> int:
    if i == 1:
        raise ValueError("bad input in row 7")
    return i


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failing_job_is_named(workers):
    with pytest.raises(JobError, match=r"run b failed.*ValueError: bad input in row 7"):
        run_jobs(
            _fails, [(0,), (1,), (2,)], workers=workers, names=["run a", "run b", "run c"], progress=False
        )


def test_results_keep_the_order_of_the_jobs():
    assert run_jobs(_fails, [(i,) for i in (0, 2, 3, 4, 5)], workers=2, progress=False) == [0, 2, 3, 4, 5]
    assert run_jobs(_fails, [], workers=2, progress=False) == []
    with pytest.raises(ValueError, match="names has 1 entries for 2 jobs"):
        run_jobs(_fails, [(0,), (2,)], names=["x"], progress=False)


def test_ablation_rows_do_not_depend_on_workers(sets):
    tr, va, te = sets
    args = (tr, va, te, PROJ, LossConfig(), FAST.replace(epochs=3), [0, 1], list(KEYS), (1, 5))
    one = run_loss_ablation(*args, progress=False, workers=1)
    two = run_loss_ablation(*args, progress=False, workers=2)
    assert one.equals(two)
    assert len(one) == 8


def test_train_threads_setting_is_applied_and_restored(sets):
    tr, va, _ = sets
    torch.set_num_threads(2)
    with one_thread():
        ref = train_projector(tr, va, PROJ, LossConfig(), FAST.replace(epochs=2, threads=0), progress=False)
    got = train_projector(tr, va, PROJ, LossConfig(), FAST.replace(epochs=2, threads=1), progress=False)
    assert torch.get_num_threads() == 2
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, got.model.state_dict()[k]), k


def test_config_checks_workers_and_threads():
    from cxrlib.config import ConfigError

    with pytest.raises(ConfigError, match="run.workers"):
        RunConfig(workers=0)
    with pytest.raises(ConfigError, match="TrainConfig.threads"):
        TrainConfig(threads=-1)
