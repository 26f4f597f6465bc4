"""Times PyTorch's CPU pooling kernels on the shapes of benches/pool.rs; prints samples per second.

Usage: python3 benches/compare/pool_torch.py [--threads N] [--repeats R] [--inner I]
Ours: cargo bench --bench pool (the kernels run on the calling thread).
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

BATCH = 64
# (name, channels, input side), as in benches/pool.rs; 2x2 windows, stride 2.
CASES = [("6x28x28_k2", 6, 28), ("16x10x10_k2", 16, 10)]


def timings(fn, repeats, inner):
    """Median wall and process CPU seconds per call over `repeats` runs of `inner` calls."""
    for _ in range(inner):  # warm-up: the first calls choose kernels and allocate
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(inner):
            fn()
        wall.append((time.perf_counter() - w0) / inner)
        cpu.append((time.process_time() - c0) / inner)
    return statistics.median(wall), statistics.median(cpu)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--inner", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name, ch, side in CASES:
        x = torch.rand(BATCH, ch, side, side) * 2 - 1
        y, idx = F.max_pool2d(x, 2, return_indices=True)
        gy = torch.rand_like(y) * 2 - 1
        kernels = {
            "max_forward": lambda: F.max_pool2d(x, 2, return_indices=True),
            "max_backward": lambda: torch.ops.aten.max_pool2d_with_indices_backward(
                gy, x, [2, 2], [2, 2], [0, 0], [1, 1], False, idx),
            "avg_forward": lambda: F.avg_pool2d(x, 2),
            "avg_backward": lambda: torch.ops.aten.avg_pool2d_backward(
                gy, x, [2, 2], [2, 2], [0, 0], False, True, None),
        }
        with torch.no_grad():
            for kernel, fn in kernels.items():
                wall, cpu = timings(fn, args.repeats, args.inner)
                print(f"pool2d/{kernel}/{name}: {BATCH / wall:,.0f} samples/s "
                      f"({wall * 1e6:.1f} us/batch wall, {cpu * 1e6:.1f} us/batch CPU)")


if __name__ == "__main__":
    main()
