"""Seeding and determinism (cxrlib.runtime).

In a CPU-only process ``seed_everything`` does not set ``torch.use_deterministic_algorithms`` (the flag imports
torch's compiler stack, ~2.5 s per notebook). These tests check the claim behind that: for the code paths the
project trains on a CPU (the projector head with its composite loss, a demo-backbone pretraining step), the
flag changes no bit of the result.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from test_training import PROJ, make_set

from cxrlib.config import LossConfig, TrainConfig
from cxrlib.paths import REPO_ROOT
from cxrlib.runtime import seed_everything, set_threads
from cxrlib.training import train_projector


@pytest.fixture(autouse=True)
def restore_flags():
    before = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    yield
    torch.use_deterministic_algorithms(before[0])
    set_threads(before[1])


def _train(flag: bool) -> dict[str, torch.Tensor]:
    seed_everything(0)
    torch.use_deterministic_algorithms(flag)
    cfgs = (
        PROJ,
        LossConfig(),
        TrainConfig(epochs=3, batch_size=32, warmup_epochs=1, patience=None, seed=0),
    )
    result = train_projector(make_set(160, 0, "train"), make_set(48, 1, "val"), *cfgs, progress=False)
    return {k: v.detach().clone() for k, v in result.model.state_dict().items()}


def test_seed_everything_on_cpu_skips_the_compiler_import():
    code = (
        "import sys, json, torch; from cxrlib.runtime import seed_everything; seed_everything(3); "
        "print(json.dumps([torch.cuda.is_available(), 'torch._inductor' in sys.modules, "
        "torch.are_deterministic_algorithms_enabled(), torch.initial_seed()]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    cuda, inductor, flag, seed = json.loads(out.strip().splitlines()[-1])
    assert seed == 3
    if cuda:  # a GPU machine: the flag is set (and so torch._inductor is imported)
        assert flag and inductor
    else:
        assert not flag and not inductor


@pytest.mark.parametrize("threads", [1, 2])
def test_deterministic_flag_changes_no_bit_of_a_projector_training(threads):
    set_threads(threads)
    off, on = _train(False), _train(True)
    assert off.keys() == on.keys()
    for k in off:
        assert torch.equal(off[k], on[k]), k
    again = _train(False)
    assert all(torch.equal(off[k], again[k]) for k in off)  # and a rerun is bit-identical


def test_deterministic_flag_changes_no_bit_of_a_demo_pretraining_step():
    from cxrlib.demo_backbone import clip_loss_distinct_texts, create_demo_model, encode_text_by_length

    def step(flag: bool) -> dict[str, torch.Tensor]:
        torch.use_deterministic_algorithms(flag)
        torch.manual_seed(0)
        model = create_demo_model(40)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(8, 3, 64, 64, generator=gen)
        tokens = torch.randint(4, 40, (6, 20), generator=gen)
        for i, n in enumerate((5, 9, 12, 20, 7, 15)):
            tokens[i, n - 1] = 3  # [EOS]
            tokens[i, n:] = 0  # padding
        inverse = torch.tensor([0, 1, 2, 3, 4, 5, 0, 2])  # repeated reports, as in a real batch
        loss = clip_loss_distinct_texts(
            model.encode_image(x, normalize=True),
            encode_text_by_length(model, tokens),
            inverse,
            model.logit_scale.exp(),
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    off, on = step(False), step(True)
    for k in off:
        assert torch.equal(off[k], on[k]), k
