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
    """Median wall time and median process CPU time of `fn` (CPU time is steadier when other
    jobs share the cores)."""
    for _ in range(3):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    for n in (1, 16):
        x = torch.full((n,), 0.5, requires_grad=True)
        w = torch.full((n,), 1.01, requires_grad=True)
        (fw, fc), (bw, bc) = bench(lambda: chain(x, w)), bench(lambda: chain(x, w).sum().backward())
        print(
            f"n={n:2}: forward {fw / 1000 * 1e6:.2f} us/op (cpu {fc / 1000 * 1e6:.2f}), "
            f"forward+backward {bw / 1000 * 1e6:.2f} us/op (cpu {bc / 1000 * 1e6:.2f})"
        )


if __name__ == "__main__":
    main()
