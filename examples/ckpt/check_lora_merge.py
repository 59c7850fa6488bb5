"""Checks graft-ckpt lora-merge against the LoRA merge written out in torch:
W + lora_alpha / r * B @ A for each targeted layer (DoRA: that sum scaled row by row to
m / its row norm), every other tensor unchanged. With ADAPTER_NAME "combined", MERGED is the
merge of `lora-combine cat` of DIR/adapter and DIR/adapter_b with weights 1 and 0.5: W plus
both products, so weighted.

    check_lora_merge.py MERGED DIR [ADAPTER_NAME]
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file

merged, d = sys.argv[1], sys.argv[2]
name = sys.argv[3] if len(sys.argv) > 3 else "adapter"


def product(folder, layer):
    """scale * B @ A of one adapter folder for one layer, or 0 if it does not adapt it."""
    c = json.load(open(os.path.join(d, folder, "adapter_config.json")))
    t = load_file(os.path.join(d, folder, "adapter_model.safetensors"))
    p = "base_model.model." + layer
    if p + ".lora_A.weight" not in t:
        return 0
    return c["lora_alpha"] / c["r"] * t[p + ".lora_B.weight"] @ t[p + ".lora_A.weight"]


if name == "combined":
    base = torch.load(os.path.join(d, "a.pt"))["model"]
    got = load_file(merged)
    for k, v in base.items():
        layer = k.rsplit(".", 1)[0]
        want = v + product("adapter", layer) + 0.5 * product("adapter_b", layer) if k.endswith(".weight") else v
        err = (got[k].double() - want.double()).abs().max().item() if v.numel() else 0.0
        assert err <= 1e-5, (k, err)
    print("lora-combine cat, then lora-merge, matches torch for", len(base), "tensors")
    sys.exit(0)
base = torch.load(os.path.join(d, "a.pt"))["model"]
config = json.load(open(os.path.join(d, name, "adapter_config.json")))
ad = load_file(os.path.join(d, name, "adapter_model.safetensors"))
got = load_file(merged)
scale = config["lora_alpha"] / config["r"]
assert sorted(got) == sorted(base), (sorted(got), sorted(base))
for k, v in base.items():
    want = v
    layer = k.rsplit(".", 1)[0]
    if k.endswith(".weight") and layer in config["target_modules"]:
        p = "base_model.model." + layer
        want = v + scale * ad[p + ".lora_B.weight"] @ ad[p + ".lora_A.weight"]
        if config.get("use_dora"):
            want = want * (ad[p + ".lora_magnitude_vector"] / want.norm(dim=1)).view(-1, 1)
    err = (got[k].double() - want.double()).abs().max().item() if v.numel() else 0.0
    assert err <= 1e-6, (k, err)
print("lora-merge matches torch for", len(base), "tensors", "(DoRA)" if config.get("use_dora") else "")
