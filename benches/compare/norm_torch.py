"""Times PyTorch's BatchNorm2d (and BatchNorm1d on [N, C]) in training mode, forward and
backward, on the shapes of benches/norm.rs; prints samples per second.

Usage: python3 benches/compare/norm_torch.py [--threads N] [--repeats R] [--inner I]
Ours: MATMUL_NUM_THREADS=N cargo bench --bench norm
"""

import argparse
import statistics
import time

import torch

# (name, [N, C, H, W]), as in benches/norm.rs.
CASES = [("64x16x24x24", (64, 16, 24, 24)), ("128x64x8x8", (128, 64, 8, 8)), ("256x512", (256, 512))]


def timings(fn, repeats, inner):
    """Median wall seconds per call over `repeats` runs of `inner` calls."""
    for _ in range(inner):  # warm-up: the first calls choose kernels and allocate
        fn()
    wall = []
    for _ in range(repeats):
        w0 = time.perf_counter()
        for _ in range(inner):
            fn()
        wall.append((time.perf_counter() - w0) / inner)
    return statistics.median(wall)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--inner", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for name, shape in CASES:
        bn = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(shape[1])
        x = (torch.rand(shape) * 3 - 1).requires_grad_()
        g = torch.rand(shape) * 2 - 1
        params = [x, bn.weight, bn.bias]

        def step():
            y = bn(x)
            return torch.autograd.grad(y, params, g)

        wall = timings(step, args.repeats, args.inner)
        kind = "2d" if len(shape) == 4 else "1d"
        print(f"batch_norm{kind}_train/{name}/fwd_bwd/t{args.threads}: {shape[0] / wall:,.0f} samples/s ({wall * 1e6:.0f} us)")


if __name__ == "__main__":
    main()
