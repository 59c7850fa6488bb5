"""Pretrains tutorial 5's CNN on Fashion-MNIST classes 0-4 in Python and exports it with
torch.jit.script, for tutorial 10 (examples/10_finetune_torchscript.cpp):

    python3 examples/10_export_cnn.py model_5class.pt [--data DIR] [--epochs N]

and, with --check TUNED, reloads the module the tutorial fine-tuned and prints its test
accuracy on all 10 classes, which must equal the one the tutorial printed (read from
TUNED + ".accuracy")."""
import argparse
import gzip
import os

import numpy as np
import torch
from torch import nn


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape).copy())


def load(data, split):
    def find(name):
        for candidate in (name, name + ".gz"):
            if os.path.exists(os.path.join(data, candidate)):
                return os.path.join(data, candidate)
        raise SystemExit(f"no {name} in {data}")
    images = read_idx(find(f"{split}-images-idx3-ubyte")).float().div(255).sub(0.2860).div(0.3530).unsqueeze(1)
    return images, read_idx(find(f"{split}-labels-idx1-ubyte")).long()


class ConvBlock(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.conv = nn.Conv2d(i, o, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(o)

    def forward(self, x):
        return torch.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)


class Net(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.backbone = nn.Sequential(ConvBlock(1, 16), ConvBlock(16, 32), ConvBlock(32, 64))
        self.fc = nn.Linear(64 * 3 * 3, classes)

    def forward(self, x):
        return self.fc(self.backbone(x).flatten(1))


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(x[i:i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return 100.0 * predicted.eq(y).double().mean().item()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--check", metavar="TUNED")
    a = p.parse_args()
    torch.set_num_threads(1)
    test_x, test_y = load(a.data, "t10k")
    if a.check:
        model = torch.jit.load(a.check)
        acc = accuracy(model, test_x, test_y)
        claimed = float(open(a.check + ".accuracy").read())
        print(f"Python: {a.check} has test accuracy {acc:.2f}% (C++ printed {claimed:.2f}%)")
        raise SystemExit(0 if abs(acc - claimed) < 0.005 else 1)
    torch.manual_seed(0)
    x, y = load(a.data, "train")
    keep = y < 5
    x, y = x[keep], y[keep]
    model = Net(5)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    for _ in range(a.epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    keep = test_y < 5
    print(f"Python: pretrained on classes 0-4: test accuracy {accuracy(model, test_x[keep], test_y[keep]):.1f}%")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    torch.jit.script(model).save(a.out)
    print(f"Python: wrote {a.out} (torch.jit.script)")


if __name__ == "__main__":
    main()
