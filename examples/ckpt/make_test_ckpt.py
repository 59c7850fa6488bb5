"""Writes the small checkpoints graft-ckpt's tests read: OUT/a.pt, as a training script saves
one ({"model": a tiny Sequential's state_dict, "epoch": 3}), and OUT/b.pt, the same with one
tensor changed and one added, for diff."""
import os
import sys

import torch
from torch import nn

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
model.train()
model(torch.randn(8, 3))  # moves the running statistics and num_batches_tracked off their defaults
sd = model.state_dict()
torch.save({"model": sd, "epoch": 3}, os.path.join(out, "a.pt"))

changed = {k: v.clone() for k, v in sd.items()}
changed["3.bias"] += 0.5
changed["extra"] = torch.ones(2, dtype=torch.float16)
torch.save({"model": changed, "epoch": 3}, os.path.join(out, "b.pt"))

with open(os.path.join(out, "garbage.bin"), "wb") as f:
    f.write(b"not a checkpoint at all")

# a.pt in torch.save's legacy format, and a safetensors file that carries metadata.
torch.save({"model": sd, "epoch": 3}, os.path.join(out, "legacy.pt"), _use_new_zipfile_serialization=False)
from safetensors.torch import load_file, save_file
save_file({"w": torch.ones(2, 3)}, os.path.join(out, "meta.safetensors"), metadata={"format": "pt", "note": "hello"})

# A LoRA adapter folder for a.pt's model, as PEFT saves one: rank 2 on the first Linear
# ("0") and on the head ("3"), written by hand so that no peft package is needed here.
import json
adapter = os.path.join(out, "adapter")
os.makedirs(adapter, exist_ok=True)
with open(os.path.join(adapter, "adapter_config.json"), "w") as f:
    json.dump({"peft_type": "LORA", "r": 2, "lora_alpha": 3, "target_modules": ["0", "3"], "bias": "none"}, f)
save_file({"base_model.model.0.lora_A.weight": torch.randn(2, 3), "base_model.model.0.lora_B.weight": torch.randn(4, 2),
           "base_model.model.3.lora_A.weight": torch.randn(2, 4), "base_model.model.3.lora_B.weight": torch.randn(2, 2)},
          os.path.join(adapter, "adapter_model.safetensors"), metadata={"format": "pt"})
# A second adapter, rank 3 on the first Linear only, for lora-combine.
second = os.path.join(out, "adapter_b")
os.makedirs(second, exist_ok=True)
with open(os.path.join(second, "adapter_config.json"), "w") as f:
    json.dump({"peft_type": "LORA", "r": 3, "lora_alpha": 6, "target_modules": ["0"], "bias": "none"}, f)
g = torch.Generator().manual_seed(6)
save_file({"base_model.model.0.lora_A.weight": torch.randn(3, 3, generator=g),
           "base_model.model.0.lora_B.weight": torch.randn(4, 3, generator=g)},
          os.path.join(second, "adapter_model.safetensors"), metadata={"format": "pt"})
# The same adapter as DoRA: use_dora and a magnitude vector per layer (one entry per output row).
dora = os.path.join(out, "adapter_dora")
os.makedirs(dora, exist_ok=True)
with open(os.path.join(dora, "adapter_config.json"), "w") as f:
    json.dump({"peft_type": "LORA", "r": 2, "lora_alpha": 3, "use_dora": True, "target_modules": ["0", "3"], "bias": "none"}, f)
tensors = load_file(os.path.join(adapter, "adapter_model.safetensors"))
g = torch.Generator().manual_seed(5)
tensors["base_model.model.0.lora_magnitude_vector"] = torch.rand(4, generator=g) + 0.5
tensors["base_model.model.3.lora_magnitude_vector"] = torch.rand(2, generator=g) + 0.5
save_file(tensors, os.path.join(dora, "adapter_model.safetensors"), metadata={"format": "pt"})


# For combine: the model's weights as a base and two fine-tunes of it (noise on every float
# tensor; the counter num_batches_tracked equal in all), in both formats.
base = {k: v.clone() for k, v in sd.items()}
save_file(base, os.path.join(out, "base.safetensors"))
for i, fmt in ((1, "safetensors"), (2, "pt")):
    g = torch.Generator().manual_seed(10 + i)
    ft = {k: (v + 0.1 * i * torch.randn(v.shape, generator=g)) if v.is_floating_point() else v.clone() for k, v in base.items()}
    if fmt == "pt":
        torch.save(ft, os.path.join(out, "ft2.pt"))
    else:
        save_file(ft, os.path.join(out, "ft1.safetensors"))
