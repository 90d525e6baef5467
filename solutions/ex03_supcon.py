r"""Notebook 03, "write SupCon yourself": the supervised contrastive loss from its equation, checked against
:class:`cxrlib.losses.SupConLoss` on random inputs (no data needed).

The equation (Khosla et al. 2020, the :math:`\mathcal{L}^{sup}_{out}` form), for L2-normalised rows
:math:`u_a` with labels :math:`y_a` and temperature :math:`\tau`:

.. math::

    \mathcal{L} = \frac{1}{|A|}\sum_{a \in A} \frac{-1}{|P(a)|}\sum_{p \in P(a)}
        \log \frac{\exp(u_a^\top u_p / \tau)}{\sum_{b \neq a} \exp(u_a^\top u_b / \tau)},
    \qquad P(a) = \{p \neq a : y_p = y_a\}, \quad A = \{a : |P(a)| > 0\}.

:func:`supcon_by_hand` is written the way a student would, one anchor at a time in float64, straight from the
formula; it is deliberately slow and obvious.

Run: ``python -m solutions.ex03_supcon`` (a second or two; the same with ``--run``, which it ignores).
"""

from __future__ import annotations

import math
import sys

import torch

from solutions._lab import Lab, Range, expect

__all__ = ["EXERCISES", "supcon_by_hand", "random_batch", "exercise_6"]


def supcon_by_hand(u: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """The SupCon loss of ``u`` (N, D) L2-normalised rows with integer labels ``y`` (N,), from the equation.

    Anchors without a positive are left out of the mean; when no anchor has one, the loss is 0.
    Differentiable (autograd goes through the loops).
    """
    n = u.shape[0]
    sims = u @ u.T / tau  # (N, N)
    per_anchor = []
    for a in range(n):
        others = [b for b in range(n) if b != a]
        positives = [p for p in others if int(y[p]) == int(y[a])]
        if not positives:
            continue
        log_denominator = torch.logsumexp(sims[a, others], dim=0)
        terms = [sims[a, p] - log_denominator for p in positives]
        per_anchor.append(-torch.stack(terms).mean())
    if not per_anchor:
        return u.sum() * 0.0
    return torch.stack(per_anchor).mean()


def random_batch(n: int, d: int, n_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(u, y)``: ``n`` random unit vectors in ``d`` dims (float64) and random labels in ``[0, n_classes)``."""
    g = torch.Generator().manual_seed(seed)
    u = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    return u, torch.randint(0, n_classes, (n,), generator=g)


def exercise_6(lab: Lab | None = None) -> dict[str, float]:
    """Write SupCon yourself and check it against cxrlib.losses.SupConLoss on random inputs."""
    from cxrlib.losses import SupConLoss

    worst_value, worst_grad = 0.0, 0.0
    cases = [(16, 8, 2, 0.07), (33, 5, 3, 0.5), (64, 32, 2, 0.02), (7, 4, 7, 0.1), (40, 16, 4, 1.0)]
    for seed, (n, d, c, tau) in enumerate(cases):
        u, y = random_batch(n, d, c, seed)
        u1 = u.clone().requires_grad_(True)
        u2 = u.clone().requires_grad_(True)
        mine, ref = supcon_by_hand(u1, y, tau), SupConLoss(tau)(u2, y)
        mine.backward()
        ref.backward()
        worst_value = max(worst_value, abs((mine - ref).item()))
        worst_grad = max(worst_grad, float((u1.grad - u2.grad).abs().max()))
        print(
            f"    N={n:>2} D={d:>2} classes={c} tau={tau:<4}: by hand {mine.item():.6f}, SupConLoss {ref.item():.6f}"
        )
    # a case with a known answer: two classes of two identical vectors each, the classes orthogonal;
    # every anchor has one positive (score 1/tau) among three others (1/tau, 0, 0)
    tau = 1.0
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    known = -(1 / tau - math.log(math.exp(1 / tau) + 2.0))
    print(f"    known case: by hand {float(supcon_by_hand(u, y, tau)):.6f}, exact {known:.6f}")
    # every label distinct: no anchor has a positive -> 0
    lone = float(supcon_by_hand(*random_batch(5, 3, 1, 0)[:1], torch.arange(5), 0.07))
    ctx = lab.size if lab is not None else "small"  # the ranges are the same at both sizes
    expect(ctx, "max |by hand - SupConLoss| (loss)", worst_value, Range((0, 1e-10), (0, 1e-10)), "float64")
    expect(ctx, "max |by hand - SupConLoss| (gradient)", worst_grad, Range((0, 1e-10), (0, 1e-10)), "float64")
    err = abs(float(supcon_by_hand(u, y, tau)) - known)
    expect(ctx, "|by hand - exact| on the known case", err, Range((0, 1e-12), (0, 1e-12)), "closed form")
    expect(ctx, "loss when no anchor has a positive", abs(lone), Range((0, 0), (0, 0)), "defined as 0")
    return {"max_value_diff": worst_value, "max_grad_diff": worst_grad, "known_case_error": err}


EXERCISES = {"exercise_6": exercise_6}

if __name__ == "__main__":
    if len(sys.argv) > 1:
        print("ex03_supcon needs no lab (random inputs): arguments ignored")
    exercise_6()
