"""Times the PyTorch twin of benches/transformer.rs; prints samples per second.

One step is forward, MSE loss against a fixed target, backward and AdamW (lr 1e-3, weight decay
0.01) of nn.TransformerEncoder: 2 layers of nn.TransformerEncoderLayer(d_model=128, nhead=4,
dim_feedforward=512, dropout=0.0, activation="gelu", batch_first=True, norm_first=True), no
final norm, at sequence 64 and batch 32, on fixed random batches (f32).

Usage: python3 benches/compare/transformer_torch.py [--threads N] [--repeats R] [--inner I]
"""

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH, SEQ, D_MODEL, HEADS, FF, LAYERS = 32, 64, 128, 4, 512, 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--inner", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, dim_feedforward=FF, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    # enable_nested_tensor only matters for padding masks in eval; off to keep the plain path.
    encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
    opt = torch.optim.AdamW(encoder.parameters(), lr=1e-3, weight_decay=0.01)
    batches = [(torch.rand(BATCH, SEQ, D_MODEL) * 2 - 1, torch.rand(BATCH, SEQ, D_MODEL) * 2 - 1) for _ in range(4)]
    state = {"next": 0}

    def step():
        x, y = batches[state["next"]]
        state["next"] = (state["next"] + 1) % len(batches)
        loss = F.mse_loss(encoder(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(5):
        step()
    rates, cpu_rates = [], []
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(args.inner):
            step()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        rates.append(args.inner * BATCH / wall)
        cpu_rates.append(args.inner * BATCH / cpu)
    print(f"encoder_d128_h4_ff512_l2_seq64/b{BATCH}/t{args.threads}: median {statistics.median(rates):.0f} samples/s, "
          f"best {max(rates):.0f} samples/s (per CPU second: best {max(cpu_rates):.0f})")


if __name__ == "__main__":
    main()
