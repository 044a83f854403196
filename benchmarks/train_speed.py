"""Training and inference throughput of the baseline CNN (samples/s) on each available device.

    python benchmarks/train_speed.py [--batch-size 16] [--steps 20]

Random inputs of the recipe's shape (1 x 128 x 1,024); times steady-state steps after a warm-up.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from melset.model import Architecture, MelCNN
from melset.system import keep_freed_memory


def bench(device: torch.device, batch: int, steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = MelCNN(Architecture(n_classes=8)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, 128, 1024, device=device)
    y = torch.randint(0, 8, (batch,), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    model.train()
    for i in range(steps + 3):
        if i == 3:
            sync()
            t = time.perf_counter()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    sync()
    train = steps * batch / (time.perf_counter() - t)
    model.eval()
    with torch.no_grad():
        for i in range(steps + 3):
            if i == 3:
                sync()
                t = time.perf_counter()
            model(x)
    sync()
    infer = steps * batch / (time.perf_counter() - t)
    return train, infer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    keep_freed_memory(None)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(
        f"MelCNN ({MelCNN(Architecture(8)).n_parameters():,} parameters), batch {args.batch_size}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    for d in devices:
        name = torch.cuda.get_device_name() if d.type == "cuda" else "cpu"
        train, infer = bench(d, args.batch_size, args.steps)
        print(f"{name:30s} train {train:8.1f} samples/s   inference {infer:8.1f} samples/s")


if __name__ == "__main__":
    main()
