"""Times the PyTorch twin of benches/attention.rs; prints sequences per second.

One iteration is F.scaled_dot_product_attention forward and the backward of sum(out * w) to
q, k and v, at batch 32, 4 heads, head dim 32, sequence 64 and 256, f32, with and without
is_causal.

Usage: python3 benches/compare/attention_torch.py [--threads N] [--repeats R] [--inner I]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

BATCH, HEADS, HEAD_DIM = 32, 4, 32


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--inner", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for seq in (64, 256):
        shape = (BATCH, HEADS, seq, HEAD_DIM)
        q, k, v, w = (torch.rand(shape) * 2 - 1 for _ in range(4))
        for causal in (False, True):
            def step():
                qq, kk, vv = (t.clone().requires_grad_(True) for t in (q, k, v))
                out = F.scaled_dot_product_attention(qq, kk, vv, is_causal=causal)
                (out * w).sum().backward()

            for _ in range(3):
                step()
            rates = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                for _ in range(args.inner):
                    step()
                rates.append(args.inner * BATCH / (time.perf_counter() - t))
            name = "causal" if causal else "full"
            print(f"seq{seq}_{name}/b{BATCH}/t{args.threads}: median {statistics.median(rates):.0f} sequences/s, "
                  f"best {max(rates):.0f} sequences/s")


if __name__ == "__main__":
    main()
