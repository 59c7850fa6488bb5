"""Checks `graft-ckpt inspect --json FILE` against torch.load(FILE): the same dotted keys in the
same order, and for each tensor the same dtype, shape, numel and float64 sum; the same
metadata. Exits 1 naming every disagreement."""
import json
import math
import subprocess
import sys

import torch

tool, path = sys.argv[1], sys.argv[2]
got = json.loads(subprocess.run([tool, "inspect", "--json", path], check=True, capture_output=True, text=True).stdout)


def flatten(obj, prefix, tensors, meta):
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            flatten(v, f"{prefix}.{k}" if prefix else str(k), tensors, meta)
    else:
        meta[prefix] = obj


tensors, meta = {}, {}
flatten(torch.load(path), "", tensors, meta)
errors = []
if got["format"] != "torch.save":
    errors.append(f"format {got['format']!r}, expected 'torch.save'")
if list(got["tensors"]) != list(tensors):
    errors.append(f"keys {list(got['tensors'])} != {list(tensors)}")
for key, t in tensors.items():
    g = got["tensors"].get(key)
    if g is None:
        continue
    want = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape), "numel": t.numel()}
    for field, w in want.items():
        if g[field] != w:
            errors.append(f"{key}.{field}: graft {g[field]!r}, python {w!r}")
    s = t.double().sum().item()
    if not math.isclose(g["sum"], s, rel_tol=1e-12, abs_tol=1e-12):
        errors.append(f"{key}.sum: graft {g['sum']!r}, python {s!r}")
if got["metadata"] != meta:
    errors.append(f"metadata {got['metadata']!r} != {meta!r}")
for e in errors:
    print("MISMATCH", e)
if errors:
    sys.exit(1)
print(f"inspect --json agrees with torch.load on {len(tensors)} tensors and {len(meta)} metadata values")
