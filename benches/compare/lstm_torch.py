"""Times the PyTorch twin of benches/lstm.rs; prints samples per second.

One step is forward, cross-entropy, backward and Adam (lr 1e-3) of nn.LSTM(28, 128,
batch_first=True) with an nn.Linear(128, 10) head on the final hidden state, at sequence 28 and
batch 64, on fixed random batches (f32).

Usage: python3 benches/compare/lstm_torch.py [--threads N] [--repeats R] [--inner I]
"""

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH, STEPS, INPUT, HIDDEN = 64, 28, 28, 128


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--inner", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lstm = nn.LSTM(INPUT, HIDDEN, batch_first=True)
    head = nn.Linear(HIDDEN, 10)
    opt = torch.optim.Adam(list(lstm.parameters()) + list(head.parameters()), lr=1e-3)
    batches = [(torch.rand(BATCH, STEPS, INPUT), torch.randint(0, 10, (BATCH,))) for _ in range(8)]
    state = {"next": 0}

    def step():
        x, y = batches[state["next"]]
        state["next"] = (state["next"] + 1) % len(batches)
        _, (h_n, _) = lstm(x)
        loss = F.cross_entropy(head(h_n[0]), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(10):
        step()
    rates, cpu_rates = [], []
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(args.inner):
            step()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        rates.append(args.inner * BATCH / wall)
        cpu_rates.append(args.inner * BATCH / cpu)
    print(f"lstm_28_128_seq28/b{BATCH}/t{args.threads}: median {statistics.median(rates):.0f} samples/s, "
          f"best {max(rates):.0f} samples/s (per CPU second: best {max(cpu_rates):.0f})")


if __name__ == "__main__":
    main()
