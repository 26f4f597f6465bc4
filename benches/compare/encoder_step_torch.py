"""Times the PyTorch twin of benches/encoder_step.rs; prints the best and median step time.

One step: nn.TransformerEncoder of 2 pre-norm layers (d_model 128, 4 heads, feed-forward 512,
GELU, dropout 0, batch_first) forward over [32, 64, 128], MSE loss to a fixed target, backward
and an AdamW step, f32.

Usage: python3 benches/compare/encoder_step_torch.py [--threads N] [--steps S]
"""

import argparse
import statistics
import time

import torch
from torch import nn

BATCH, SEQ, D_MODEL = 32, 64, 128


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(D_MODEL, 4, dim_feedforward=512, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(BATCH, SEQ, D_MODEL) * 2 - 1
    y = torch.rand(BATCH, SEQ, D_MODEL) * 2 - 1

    def step():
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1e3)
    best = min(times)
    print(f"encoder_step torch/b{BATCH}/t{args.threads}: best {best:.1f} ms ({BATCH / best * 1e3:.0f} samples/s), "
          f"median {statistics.median(times):.1f} ms")


if __name__ == "__main__":
    main()
