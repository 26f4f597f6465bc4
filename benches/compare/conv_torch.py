"""Times PyTorch's CPU conv2d kernels on the shapes of benches/conv.rs; prints samples per second.

Usage: python3 benches/compare/conv_torch.py [--threads N] [--repeats R] [--inner I]
See benches/compare/README.md for the matching cargo bench command.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

BATCH = 64
# (name, input channels, output channels, input side, kernel side, padding), as in benches/conv.rs
CASES = [
    ("1to6_28x28_k5", 1, 6, 28, 5, 0),
    ("6to16_12x12_k5", 6, 16, 12, 5, 0),
    ("lenet_1to6_28x28_k5_p2", 1, 6, 28, 5, 2),
    ("lenet_6to16_14x14_k5", 6, 16, 14, 5, 0),
]


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
    parser.add_argument("--inner", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"mkldnn {torch.backends.mkldnn.is_available()}")
    conv_backward = torch.ops.aten.convolution_backward
    for name, cin, cout, side, k, pad in CASES:
        x = torch.rand(BATCH, cin, side, side) * 2 - 1
        w = (torch.rand(cout, cin, k, k) * 2 - 1) * 0.2
        b = (torch.rand(cout) * 2 - 1) * 0.2
        gy = torch.rand_like(F.conv2d(x, w, b, padding=pad))
        geometry = ([1, 1], [pad, pad], [1, 1], False, [0, 0], 1)  # stride, padding, dilation, ..., groups
        kernels = {
            "forward": lambda: F.conv2d(x, w, b, padding=pad),
            # The aten backward with one gradient requested at a time, as benches/conv.rs times ours.
            "input_grad": lambda: conv_backward(gy, x, w, None, *geometry, [True, False, False]),
            "weight_grad": lambda: conv_backward(gy, x, w, None, *geometry, [False, True, False]),
        }
        with torch.no_grad():
            for kernel, fn in kernels.items():
                wall, cpu = timings(fn, args.repeats, args.inner)
                print(f"conv2d/{kernel}/{name}: {BATCH / wall:,.0f} samples/s "
                      f"({wall * 1e6:.0f} us/batch wall, {cpu * 1e6:.0f} us/batch CPU)")


if __name__ == "__main__":
    main()
