"""Checks what graft-ckpt combine wrote against mergekit's formulas in plain PyTorch
(tests/state_dict/combine_formulas.py).

    check_combine.py FORMULAS_DIR DIR OUT METHOD [JSON_SETTINGS]
"""
import json
import os
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, sys.argv[1])
import combine_formulas  # noqa: E402

d, got_path, method = sys.argv[2], sys.argv[3], sys.argv[4]
settings = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
# The oracle reads torch.save files: the safetensors inputs converted first, into a folder of
# this run's own (ctest runs the checks of several methods at once).
scratch = tempfile.TemporaryDirectory(prefix="check_combine.")
for name in ("base", "ft1"):
    torch.save(load_file(os.path.join(d, name + ".safetensors")),
               os.path.join(scratch.name, name + ".as.pt"))
spec = {"method": method, "inputs": [os.path.join(scratch.name, "ft1.as.pt"), os.path.join(d, "ft2.pt")],
        "base": os.path.join(scratch.name, "base.as.pt"),
        "out": os.path.join(scratch.name, "combine.expected.pt")}
spec.update(settings)
combine_formulas.combine(spec)
want = torch.load(spec["out"])
got = load_file(got_path) if got_path.endswith(".safetensors") else torch.load(got_path)
assert list(got) == list(want), (list(got), list(want))
for k, v in want.items():
    assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
    err = (got[k].double() - v.double()).abs().max().item() if v.numel() else 0.0
    assert err <= 1e-6, (k, err)
print(f"combine {method} matches the formula for {len(want)} tensors")
