"""Starts tutorial 11's training run in Python (examples/11_continue_in_cpp.cpp continues it):
tutorial 5's CNN on the first IMAGES Fashion-MNIST training images, bfloat16 autocast on the
CPU, SGD with momentum in two param groups (backbone, head), a per-step cosine schedule over
TOTAL_EPOCHS, and timm's ModelEmaV3. After EPOCHS epochs it saves a training checkpoint:

    python3 examples/11_start_in_python.py run.pt [--data DIR] [--images N] [--epochs 2] [--total-epochs 4]

With --check CONTINUED it reloads the training checkpoint the C++ program saved and prints the
test accuracy of its model and of its EMA weights, which must equal those the program printed
(read from CONTINUED + ".accuracy")."""
import argparse
import importlib.util
import os

import torch
from timm.utils import ModelEmaV3

# Tutorial 10's script holds the CNN and the Fashion-MNIST reader.
_spec = importlib.util.spec_from_file_location("export_cnn", os.path.join(os.path.dirname(__file__), "10_export_cnn.py"))
export_cnn = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(export_cnn)

BATCH = 64


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--images", type=int, default=60000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--total-epochs", type=int, default=4)
    p.add_argument("--check", metavar="CONTINUED")
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    test_x, test_y = export_cnn.load(a.data, "t10k")
    if a.check:
        run = torch.load(a.check)
        model = export_cnn.Net(10)
        claimed = [float(v) for v in open(a.check + ".accuracy").read().split()]
        ok = True
        for name, key, c in (("model", "model", claimed[0]), ("EMA", "state_dict_ema", claimed[1])):
            model.load_state_dict(run[key])
            acc = export_cnn.accuracy(model, test_x, test_y)
            print(f"Python: {a.check}: {name} weights, test accuracy {acc:.2f}% (C++ printed {c:.2f}%)")
            ok = ok and abs(acc - c) < 0.005
        raise SystemExit(0 if ok else 1)

    torch.manual_seed(0)
    x, y = export_cnn.load(a.data, "train")
    x, y = x[: a.images], y[: a.images]
    model = export_cnn.Net(10)
    opt = torch.optim.SGD([{"params": model.backbone.parameters()}, {"params": model.fc.parameters()}],
                          lr=0.05, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = (len(x) + BATCH - 1) // BATCH
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.total_epochs * steps_per_epoch)
    ema = ModelEmaV3(model, decay=0.998, use_warmup=True)
    step = 0
    for epoch in range(a.epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(BATCH):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            ema.update(model, step=step)
    print(f"Python: {a.epochs} epochs on {len(x)} images (bfloat16 autocast): test accuracy "
          f"{export_cnn.accuracy(model, test_x, test_y):.2f}%, EMA {export_cnn.accuracy(ema.module, test_x, test_y):.2f}%")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict(),
                "state_dict_ema": ema.module.state_dict(), "rng": {"cpu": torch.get_rng_state(), "cuda": []},
                "step": step, "epoch": a.epochs}, a.out)
    print(f"Python: wrote {a.out} (model, optimizer, lr_scheduler, state_dict_ema, rng, step {step}, epoch {a.epochs})")


if __name__ == "__main__":
    main()
