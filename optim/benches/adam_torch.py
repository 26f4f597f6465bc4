"""PyTorch twin of `adam.rs`: one Adam / SGD step over 1M parameters (one tensor) and over 100
tensors of 10k, single thread. `python3 optim/benches/adam_torch.py`"""
import time

import torch

torch.set_num_threads(1)


def bench(name, make, tensors, each, reps=200):
    params = [torch.rand(each, requires_grad=True) for _ in range(tensors)]
    for p in params:
        p.grad = torch.rand(each) - 0.5
    opt = make(params)
    opt.step()
    t0 = time.perf_counter()
    for _ in range(reps):
        opt.step()
    print(f"{name}: {(time.perf_counter() - t0) / reps * 1e3:.3f} ms")


M = 1 << 20
bench("adam/1x1M", lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4, foreach=False), 1, M)
bench("adam/1x1M fused", lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4, fused=True), 1, M)
bench("adam/100x10k", lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4, foreach=False), 100, 10_000)
bench("adam/100x10k fused", lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4, fused=True), 100, 10_000)
bench("adamw/1x1M fused", lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-4, fused=True), 1, M)
bench("sgd_momentum/1x1M", lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9, weight_decay=1e-4), 1, M)


def dead(reps=100):
    p = torch.rand(M, requires_grad=True)
    p.grad = torch.rand(M) - 0.5
    opt = torch.optim.Adam([p], lr=1e-3)
    opt.step()
    p.grad = torch.zeros(M)
    for _ in range(3000):
        opt.step()
    t0 = time.perf_counter()
    for _ in range(reps):
        opt.step()
    print(f"adam/1x1M after 3000 dead steps: {(time.perf_counter() - t0) / reps * 1e3:.3f} ms")


dead()
