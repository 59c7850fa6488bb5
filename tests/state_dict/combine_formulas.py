"""mergekit's per-tensor merge formulas (release 0.1.5), written out in plain PyTorch, as the
oracle of graft's combinations (tests/state_dict/test_combine.cpp). check_against_mergekit.py
checks these functions against mergekit itself, by hand (mergekit is not installed in CI).

    python combine_formulas.py SPECS.json

SPECS: a list of {"inputs": [paths], "base": path or null, "method": ..., "weights": [...], "t": ...,
"density": ..., "lambda": ..., "normalize": bool or null, "rescale": "l1"|"inverse_density"|
"none", "per_key": {key: {"weights"|"t"|"density"|"lambda"|"take": ...}}, "masks": path or
null (DARE: {key: [mask per input]}), "out": path}. Files are torch.save state dicts; the
result is written to "out" the same way. Computation is in float32 (float64 for float64
tensors) and the result is cast to the reference tensor's dtype, as graft documents.
"""
import json
import sys

import torch


def linear(xs, weights, normalize=True):
    """mergekit "linear": sum_i w_i x_i, divided by sum_i w_i when normalizing."""
    w = torch.tensor(weights, dtype=xs[0].dtype)
    result = torch.zeros_like(xs[0])
    for x, c in zip(xs, w):
        result.addcmul_(x, c)
    if normalize:
        result.div_(w.sum())
    return result


def rescaled_masked(tensor, mask, rescale, density):
    masked = tensor * mask
    if rescale == "none":
        return masked
    if rescale == "inverse_density":
        return masked / density
    before, after = tensor.abs().sum(), masked.abs().sum()  # mergekit's l1 norm matching
    if before < 1e-7 or after < 1e-7:
        return masked
    return masked * (before / after)


def magnitude(tensor, density):
    """TIES's trim: keep the max(1, int(density * n)) largest magnitudes."""
    if density >= 1:
        return tensor
    if tensor.numel() == 0:
        return torch.zeros_like(tensor)
    k = max(1, int(density * tensor.numel()))
    mask = torch.zeros(tensor.numel(), dtype=tensor.dtype)
    mask[torch.argsort(tensor.abs().reshape(-1).float(), descending=True)[:k]] = 1
    return tensor * mask.reshape_as(tensor)


def sign_mask(deltas):
    """TIES's election ("sum"): the sign of the total, and who agrees with it."""
    majority = (deltas.sum(dim=0) >= 0).to(deltas.dtype) * 2 - 1
    return deltas.sign() == majority


def task_arithmetic_family(base, xs, weights, trim=False, drop_masks=None, elect=False, normalize=False, density=1.0,
                           lam=1.0, rescale="l1"):
    """mergekit's generalized task arithmetic: task_arithmetic, ties, dare_linear, dare_ties."""
    deltas = []
    for i, x in enumerate(xs):
        d = x - base
        if trim:
            d = magnitude(d, density)
        if drop_masks is not None and density < 1:
            d = rescaled_masked(d, drop_masks[i].to(d.dtype), rescale, density)
        deltas.append(d)
    deltas = torch.stack(deltas)
    w = torch.tensor(weights, dtype=deltas.dtype)
    while w.dim() < deltas.dim():
        w = w.unsqueeze(-1)
    deltas = deltas * w
    if elect:
        mask = sign_mask(deltas).to(deltas.dtype)
        mixed = (deltas * mask).sum(dim=0)
        divisor = (w * mask).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = deltas.sum(dim=0)
        divisor = w.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if normalize:
        mixed = mixed / divisor
    if lam != 1:
        mixed = mixed * lam
    return base + mixed


def slerp(t, a, b, dot_threshold=0.9995, eps=1e-8, chunk=1024 * 1024):
    """mergekit's SLERP of one output: the tensor as one vector, its norms taken chunk by chunk."""
    x = a.reshape(1, -1)
    y = b.reshape(1, -1)
    tt = torch.tensor(t, dtype=x.dtype).reshape(-1, 1)
    if not x.shape[1]:
        return ((1 - tt) * x + tt * y).reshape(a.shape)
    step = max(1, chunk // x.shape[0])
    na = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x[:, s:s + step], dim=1, keepdim=True)
                                               for s in range(0, x.shape[1], step)]), dim=0)
    nb = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(y[:, s:s + step], dim=1, keepdim=True)
                                               for s in range(0, y.shape[1], step)]), dim=0)
    na = torch.where(na > eps, na, torch.ones_like(na))
    nb = torch.where(nb > eps, nb, torch.ones_like(nb))
    dot = torch.stack([((x[:, s:s + step] / na) * (y[:, s:s + step] / nb)).sum(dim=1, keepdim=True)
                       for s in range(0, x.shape[1], step)]).sum(dim=0).clamp(-1, 1)
    lin = dot.abs() > dot_threshold
    theta = torch.acos(torch.where(lin, torch.zeros_like(dot), dot))
    sin_theta = torch.sin(theta)
    ca = torch.where(lin, 1 - tt, torch.sin((1 - tt) * theta) / sin_theta)
    cb = torch.where(lin, tt, torch.sin(tt * theta) / sin_theta)
    return (ca * x + cb * y).reshape(a.shape)


def combine(spec):
    inputs = [torch.load(p) for p in spec["inputs"]]
    base = torch.load(spec["base"]) if spec.get("base") else None
    masks = torch.load(spec["masks"]) if spec.get("masks") else None
    ref = base if base is not None else inputs[0]
    method = spec["method"]
    out = {}
    for key, r in ref.items():
        p = dict(spec)
        p.update(spec.get("per_key", {}).get(key, {}))
        if "take" in p:
            take = p["take"]
            out[key] = (base if take == "base" else inputs[take])[key].clone()
            continue
        if not r.is_floating_point():
            out[key] = r.clone()
            continue
        cd = torch.float64 if r.dtype == torch.float64 else torch.float32
        xs = [sd[key].to(cd) for sd in inputs]
        weights = p.get("weights") or [1.0] * len(xs)
        if method == "interpolate":
            t = p["t"]
            y = linear(xs, [1 - t, t], True)
        elif method == "linear":
            y = linear(xs, weights, True if p.get("normalize") is None else p["normalize"])
        elif method == "slerp":
            y = slerp(p["t"], base[key].to(cd), xs[0])
        else:
            normalize = p.get("normalize")
            if normalize is None:
                normalize = method == "ties"
            y = task_arithmetic_family(
                base[key].to(cd), xs, weights, trim=method == "ties",
                drop_masks=masks[key] if method.startswith("dare") else None,
                elect=method in ("ties", "dare_ties"), normalize=normalize, density=p.get("density", 1.0),
                lam=p.get("lambda", 1.0), rescale=p.get("rescale", "l1"))
        out[key] = y.to(r.dtype)
    torch.save(out, spec["out"])


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        for spec in json.load(f):
            combine(spec)
    print("ok")
