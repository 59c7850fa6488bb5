"""Writes torchvision's ResNet-18 state dict, as torch.save writes it, for tutorial 8:

    python3 examples/08_export_resnet18.py resnet18.pth [--pretrained]

--pretrained takes the ImageNet weights (torchvision downloads them once); without it the
architecture's own initialization stands in, which is what the tests use (they run offline)."""
import os
import sys

import torch
import torchvision

path = sys.argv[1]
pretrained = "--pretrained" in sys.argv[2:]
torch.manual_seed(0)
model = torchvision.models.resnet18(weights="IMAGENET1K_V1" if pretrained else None)
os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
torch.save(model.state_dict(), path)
print(f"wrote {path}: torchvision resnet18, {'ImageNet weights' if pretrained else 'initial weights'}")
