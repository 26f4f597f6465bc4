"""PyTorch twin of benches/autograd.rs `op_chain`: 1000 elementwise ops (y = tanh(y * w), 500
times) on a 1- and a 16-element tensor, forward with graph and forward+backward, per op.

    pip install torch --index-url https://download.pytorch.org/whl/cpu
    python3 benches/compare/autograd_torch.py [--threads 1]
"""
import argparse
import statistics
import time

import torch


def chain(x, w):
    y = x
    for _ in range(500):
        y = torch.tanh(y * w)
    return y


def bench(fn, repeats=30):
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    for n in (1, 16):
        x = torch.full((n,), 0.5, requires_grad=True)
        w = torch.full((n,), 1.01, requires_grad=True)
        fwd = bench(lambda: chain(x, w))
        fb = bench(lambda: chain(x, w).sum().backward())
        print(f"n={n:2}: forward {fwd / 1000 * 1e6:.2f} us/op, forward+backward {fb / 1000 * 1e6:.2f} us/op")


if __name__ == "__main__":
    main()
