"""Checks combine_formulas.py (the oracle of graft's combinations) against mergekit itself. Run
by hand when mergekit's release changes; CI does not install mergekit (its dependencies are
large and pinned). mergekit's merge kernels need only torch, so its wheel without dependencies
is enough:

    pip download mergekit==0.1.5 --no-deps -d /tmp/mk
    pip install --no-deps --target /tmp/mergekit /tmp/mk/mergekit-0.1.5-py3-none-any.whl
    PYTHONPATH=/tmp/mergekit:tests/state_dict python tests/state_dict/check_against_mergekit.py

with a Python that has torch (build/venv/torch2/bin/python after scripts/test.sh).
"""
import torch

import combine_formulas as f
from mergekit.merge_methods.base import TensorBatch, TensorEntry, TensorGroup
from mergekit.merge_methods.linear import linear_merge
from mergekit.merge_methods import registry
from mergekit.merge_methods.slerp import slerp

torch.manual_seed(0)
worst = 0.0


def close(a, b, what):
    global worst
    err = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
    worst = max(worst, err)
    assert a.shape == b.shape and err <= 1e-6, (what, err)


shapes = [(16, 12), (7,), (3, 4, 5), (0, 3), (1,)]
for shape in shapes:
    base = torch.randn(shape)
    xs = [base + s * torch.randn(shape) for s in (0.1, 0.2, 0.15)]
    weights = [1.0, 0.7, -0.3]

    # linear: weighted and uniform, normalized or not.
    for w, normalize in ((weights[:2] + [1.3], True), ([1.0, 1.0, 1.0], True), (weights, False)):
        batch = TensorBatch(tuple(x.unsqueeze(0) for x in xs))
        got = linear_merge.merge_batch(batch, weight=torch.tensor([w]), normalize=normalize)[0]
        close(f.linear(xs, w, normalize), got, ("linear", shape, w, normalize))

    # The task methods, TIES and DARE, through mergekit's own merge_group.
    ids = ["a", "b", "c"]
    group = TensorGroup((TensorEntry("base", base, is_base=True),) + tuple(TensorEntry(i, x) for i, x in zip(ids, xs)))
    for name in ("task_arithmetic", "ties", "dare_linear", "dare_ties"):
        method = registry.get(name)
        defaults = {p.name: p.default for p in method.spec.parameters}
        for density, lam in ((0.4, 1.0), (0.9, 0.6)):
            params = dict(defaults, weight=dict(zip(ids, weights)), density={i: density for i in ids},
                          **{"lambda": lam})
            torch.manual_seed(42)
            got = method.merge_group(group, **params)
            # DARE draws one Bernoulli mask per input, in order, from the global generator: the
            # same draws, given to the formula.
            masks = None
            if name.startswith("dare"):
                torch.manual_seed(42)
                masks = [torch.bernoulli(torch.full_like(x, density)) for x in xs]
            want = f.task_arithmetic_family(
                base, xs, weights, trim=name == "ties", drop_masks=masks, elect=name in ("ties", "dare_ties"),
                normalize=params["normalize"], density=density if name != "task_arithmetic" else 1.0, lam=lam,
                rescale="l1" if params["rescale"] else "none")
            close(want, got, (name, shape, density, lam))

    # SLERP: any pair, a nearly parallel pair (linear), a zero tensor.
    for a, b in ((base, xs[0]), (base, 2 * base + 1e-6 * torch.randn(shape)), (torch.zeros(shape), xs[1])):
        for t in (0.0, 0.3, 1.0):
            got = slerp(torch.tensor([t]), a.unsqueeze(0), b.unsqueeze(0))[0]
            close(f.slerp(t, a, b), got, ("slerp", shape, t))

print(f"combine_formulas.py equals mergekit's kernels on {len(shapes)} shapes (largest difference {worst:.3g})")
