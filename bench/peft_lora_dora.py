"""PEFT's own cost of DoRA against LoRA, on the ResNet-50 of bench_lora.cpp (hand::ResNet50's
shapes, plain nn.Conv2d): one training step (forward, cross-entropy, backward, AdamW) with
LoRA and with DoRA on every convolution, the head trained whole, as bench_lora's graft steps.
bench_lora runs it with --peft PYTHON and prints its ratio next to graft's.

    peft_lora_dora.py STEPS BATCH IMAGE
prints "peft_lora_ms X" and "peft_dora_ms Y" (CPU time per step, one thread).
"""
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

steps, batch, image = (int(a) for a in sys.argv[1:4])
classes, rank, alpha = 1000, 8, 16
torch.set_num_threads(1)


def conv(cin, cout, k, stride):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)


class Bottleneck(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1, self.bn1 = conv(cin, planes, 1, 1), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = conv(planes, planes, 3, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = conv(planes, planes * 4, 1, 1), nn.BatchNorm2d(planes * 4)
        self.down = None
        if stride != 1 or cin != planes * 4:
            self.down, self.down_bn = conv(cin, planes * 4, 1, stride), nn.BatchNorm2d(planes * 4)

    def forward(self, x):
        identity = self.down_bn(self.down(x)) if self.down is not None else x
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + identity)


class ResNet50(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = conv(3, 64, 7, 2), nn.BatchNorm2d(64)
        layers, cin = [], 64
        for i, n in enumerate((3, 4, 6, 3)):
            blocks = []
            for b in range(n):
                blocks.append(Bottleneck(cin, 64 << i, 2 if b == 0 and i > 0 else 1))
                cin = (64 << i) * 4
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


torch.manual_seed(1)
x, y = torch.randn(batch, 3, image, image), torch.randint(0, classes, (batch,))
for dora in (False, True):
    torch.manual_seed(0)
    model = get_peft_model(ResNet50(), LoraConfig(r=rank, lora_alpha=alpha, use_dora=dora, modules_to_save=["fc"],
                                                  target_modules=["conv1", "conv2", "conv3", "down"]))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=1e-2)

    def step():
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    start = time.process_time()
    for _ in range(steps):
        step()
    print(f"peft_{'dora' if dora else 'lora'}_ms {1e3 * (time.process_time() - start) / steps:.1f}", flush=True)
