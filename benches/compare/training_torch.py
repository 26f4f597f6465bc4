"""Times PyTorch training steps on the models of benches/training.rs; prints samples per second.

One step is forward, cross-entropy, backward and Adam (lr 1e-3) on real MNIST batches: the
784-128-64-10 ReLU MLP at batch 32 and 128, and LeNet-5 (conv 1->6 5x5 padding 2, ReLU, 2x2
max-pool, conv 6->16 5x5, ReLU, 2x2 max-pool, 400-120-84-10) at batch 64.

Usage: python3 benches/compare/training_torch.py [--threads N] [--repeats R] [--inner I]
    [--data-dir data/mnist]
See benches/compare/README.md for the matching cargo bench command.
"""

import argparse
import gzip
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


def load_idx(path):
    """An IDX file (gzipped) as a uint8 tensor of its declared shape."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    rank = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank)]
    data = torch.frombuffer(bytearray(raw[4 + 4 * rank:]), dtype=torch.uint8)
    return data.reshape(dims)


def mlp():
    return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))


def lenet():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


class Trainer:
    """A model, its Adam optimizer and a cycle of MNIST batches (like the Rust bench)."""

    def __init__(self, model, images, labels, batch, flat):
        self.model = model
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))
        n = images.shape[0] // batch
        x = images[order[: n * batch]]
        self.xs = list((x.reshape(n, batch, 784) if flat else x.reshape(n, batch, 1, 28, 28)).unbind(0))
        self.ys = list(labels[order[: n * batch]].reshape(n, batch).unbind(0))
        self.next = 0

    def step(self):
        x, y = self.xs[self.next], self.ys[self.next]
        self.next = (self.next + 1) % len(self.xs)
        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        self.opt.step()
        return loss


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
    parser.add_argument("--data-dir", default=os.path.join(HERE, "..", "..", "data", "mnist"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, flush denormal on")
    images = load_idx(os.path.join(args.data_dir, "train-images-idx3-ubyte.gz")).float() / 255.0
    labels = load_idx(os.path.join(args.data_dir, "train-labels-idx1-ubyte.gz")).long()
    cases = [("mlp_784_128_64_10", 32, True), ("mlp_784_128_64_10", 128, True), ("lenet5", 64, False)]
    for name, batch, flat in cases:
        torch.manual_seed(0)
        trainer = Trainer(mlp() if flat else lenet(), images, labels, batch, flat)
        wall, cpu = timings(trainer.step, args.repeats, args.inner)
        print(f"training_step/{name}/b{batch}/t{args.threads}: {batch / wall:,.0f} samples/s "
              f"({wall * 1e6:.0f} us/step wall, {cpu * 1e6:.0f} us/step CPU)")


if __name__ == "__main__":
    main()
