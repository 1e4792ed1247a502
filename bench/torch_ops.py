#!/usr/bin/python3
"""PyTorch's side of bench/run: one process runs one workload and prints one JSON line.

  torch_ops.py --list                            every workload, "NAME<TAB>CONFIG" per line
  torch_ops.py --info                            threads and the OpenBLAS core in use (JSON)
  torch_ops.py --workload NAME --config CONFIG   times it: {"name","config","ms","min_ms","iters","runs"}
    [--threads N] [--runs R] [--min-run-s S]

The (name, config) pairs mirror bench/bench_ops.cpp: the config string holds the shapes and
dims(config) reads its integers in order. To add a workload, add one @workload entry here and one
`reg` entry in bench_ops.cpp with the same name and config strings. A setup function builds the
inputs and returns the timed body.

bench/run starts this with OMP_WAIT_POLICY=PASSIVE and a GLIBC_TUNABLES that keeps large blocks
out of mmap (PyTorch has no caching CPU allocator), one fresh process per workload.

Timing (identical in bench_ops.cpp): warm up (>= 2 calls and >= 0.1 s); pick n calls per run so a
run lasts >= min_run_s (from the warm-up's mean call time); do `runs` runs (fewer, but >= 3, when
they would take over 2 s); report the median (and the min) of the per-call times, in ms.
"""
import argparse
import json
import math
import re
import sys
import time

torch = None  # imported in main(), after --list (which needs no torch)

WORKLOADS = []  # (name, config, setup)


def workload(name, *configs):
    def deco(setup):
        for c in configs:
            WORKLOADS.append((name, c, setup))
        return setup
    return deco


def dims(config):
    return [int(t) for t in re.findall(r"\d+", config)]


def rn(*shape, rg=False):
    return torch.randn(*shape, requires_grad=rg)


def clear_grads(*ts):
    for t in ts:
        t.grad = None


MATMUL_CONFIGS = ("64x64x64", "128x128x128", "256x256x256", "512x512x512",
                  "1024x1024x1024", "2048x2048x2048", "4096x256x768", "4096x768x256")


# ---- matmul: config MxKxN, [M,K] @ [K,N]
@workload("matmul", *MATMUL_CONFIGS)
def _(d):
    a, b = rn(d[0], d[1]), rn(d[1], d[2])
    return lambda: torch.matmul(a, b)


@workload("matmul+bwd", *MATMUL_CONFIGS)
def _(d):
    a, b, g = rn(d[0], d[1], rg=True), rn(d[1], d[2], rg=True), rn(d[0], d[2])

    def body():
        torch.matmul(a, b).backward(g)
        clear_grads(a, b)
    return body


# ---- batched matmul (attention scores): config BxMxKxN, [B,M,K] @ [B,K,N]
@workload("bmm", "96x128x64x128")
def _(d):
    a, b = rn(d[0], d[1], d[2]), rn(d[0], d[2], d[3])
    return lambda: torch.matmul(a, b)


@workload("bmm+bwd", "96x128x64x128")
def _(d):
    a, b, g = rn(d[0], d[1], d[2], rg=True), rn(d[0], d[2], d[3], rg=True), rn(d[0], d[1], d[3])

    def body():
        torch.matmul(a, b).backward(g)
        clear_grads(a, b)
    return body


# ---- softmax over the last dim: config RxC
@workload("softmax", "4096x1024")
def _(d):
    x = rn(d[0], d[1])
    return lambda: torch.softmax(x, -1)


@workload("softmax+bwd", "4096x1024")
def _(d):
    x, g = rn(d[0], d[1], rg=True), rn(d[0], d[1])

    def body():
        torch.softmax(x, -1).backward(g)
        clear_grads(x)
    return body


# ---- layer_norm over the last dim with weight and bias: config RxC
@workload("layer_norm", "4096x768")
def _(d):
    x, w, b = rn(d[0], d[1]), rn(d[1]), rn(d[1])
    return lambda: torch.nn.functional.layer_norm(x, (d[1],), w, b, 1e-5)


@workload("layer_norm+bwd", "4096x768")
def _(d):
    x, w, b, g = rn(d[0], d[1], rg=True), rn(d[1], rg=True), rn(d[1], rg=True), rn(d[0], d[1])

    def body():
        torch.nn.functional.layer_norm(x, (d[1],), w, b, 1e-5).backward(g)
        clear_grads(x, w, b)
    return body


# ---- gelu, exact erf form: config RxC
@workload("gelu", "4096x3072")
def _(d):
    x = rn(d[0], d[1])
    return lambda: torch.nn.functional.gelu(x)


@workload("gelu+bwd", "4096x3072")
def _(d):
    x, g = rn(d[0], d[1], rg=True), rn(d[0], d[1])

    def body():
        torch.nn.functional.gelu(x).backward(g)
        clear_grads(x)
    return body


# ---- broadcasting add (bias add): config RxC+C, [R,C] + [C]
@workload("add_bcast", "4096x768+768")
def _(d):
    x, b = rn(d[0], d[1]), rn(d[2])
    return lambda: torch.add(x, b)


@workload("add_bcast+bwd", "4096x768+768")
def _(d):
    x, b, g = rn(d[0], d[1], rg=True), rn(d[2], rg=True), rn(d[0], d[1])

    def body():
        torch.add(x, b).backward(g)
        clear_grads(x, b)
    return body


# ---- conv2d with bias, stride 1: config xNxCxHxW,wOxCxKxK,padP
CONV_CONFIGS = ("x64x32x28x28,w32x32x3x3,pad1", "x64x1x28x28,w32x1x3x3,pad1")


@workload("conv2d", *CONV_CONFIGS)
def _(d):
    x, w, b = rn(d[0], d[1], d[2], d[3]), rn(d[4], d[5], d[6], d[7]), rn(d[4])
    return lambda: torch.nn.functional.conv2d(x, w, b, 1, d[8])


# The input needs a gradient unless it is the network's input (one channel).
@workload("conv2d+bwd", *CONV_CONFIGS)
def _(d):
    x = rn(d[0], d[1], d[2], d[3], rg=d[1] > 1)
    w, b = rn(d[4], d[5], d[6], d[7], rg=True), rn(d[4], rg=True)
    g = rn(d[0], d[4], d[2] + 2 * d[8] - d[6] + 1, d[3] + 2 * d[8] - d[7] + 1)

    def body():
        torch.nn.functional.conv2d(x, w, b, 1, d[8]).backward(g)
        clear_grads(x, w, b)
    return body


# ---- per-op overhead: add of two tiny tensors, forward only: config N
@workload("add_tiny", "1", "4")
def _(d):
    a, b = rn(d[0]), rn(d[0])
    return lambda: torch.add(a, b)


def zlpr(y_pred, y_true):
    """ZLPR as bert4torch's MultilabelCategoricalCrossentropy writes it, batch mean."""
    y_pred = (1 - 2 * y_true) * y_pred
    y_pred_neg = y_pred - y_true * 1e12
    y_pred_pos = y_pred - (1 - y_true) * 1e12
    zeros = torch.zeros_like(y_pred[..., :1])
    neg_loss = torch.logsumexp(torch.cat([y_pred_neg, zeros], dim=-1), dim=-1)
    pos_loss = torch.logsumexp(torch.cat([y_pred_pos, zeros], dim=-1), dim=-1)
    return (neg_loss + pos_loss).mean()


# ---- ZLPR multi-label loss, forward + backward, mean over the batch: config BxC, 10% positives
@workload("zlpr_loss", "256x1000")
def _(d):
    x, t = rn(d[0], d[1], rg=True), (torch.rand(d[0], d[1]) < 0.1).float()

    def body():
        zlpr(x, t).backward()
        clear_grads(x)
    return body


# ---- one SGD training step of an MLP with the ZLPR loss: config BxD0xD1xD2xD3 (784-1024-1024-10),
# ReLU, nn.Linear's init, 30% positive labels; forward, backward, p -= lr * grad, grads cleared.
@workload("mlp_zlpr", "256x784x1024x1024x10")
def _(d):
    x, t = rn(d[0], d[1]), (torch.rand(d[0], d[4]) < 0.3).float()
    model = torch.nn.Sequential(torch.nn.Linear(d[1], d[2]), torch.nn.ReLU(), torch.nn.Linear(d[2], d[3]),
                                torch.nn.ReLU(), torch.nn.Linear(d[3], d[4]))
    params = list(model.parameters())

    def body():
        zlpr(model(x), t).backward()
        with torch.no_grad():
            for p in params:
                p.add_(p.grad, alpha=-0.01)
                p.grad = None
    return body


# ------------------------------------------------------------------------------------ timing
def time_body(body, runs, min_run_s):
    clock = time.perf_counter
    done, first, elapsed = 0, 0.0, 0.0
    w0 = clock()
    while done < 2 or elapsed < 0.1:
        body()
        elapsed = clock() - w0
        done += 1
        if done == 1:
            first = elapsed
    per = max((elapsed - first) / (done - 1), 1e-9)
    n = max(1, math.ceil(min_run_s / per))
    # Slow workloads (over ~2 s for all runs) get fewer runs, but at least 3.
    if per * n * runs > 2.0:
        runs = max(min(runs, 3), int(2.0 / (per * n)))
    per_call = []
    for _ in range(runs):
        t0 = clock()
        for _ in range(n):
            body()
        per_call.append((clock() - t0) / n * 1e3)
    per_call.sort()
    m = len(per_call)
    med = per_call[m // 2] if m % 2 else 0.5 * (per_call[m // 2 - 1] + per_call[m // 2])
    return med, per_call[0], n, runs


def openblas_core():
    """The OpenBLAS core this process uses (torch links the same libopenblas.so.0)."""
    import ctypes
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_corename.restype = ctypes.c_char_p
        lib.openblas_get_config.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode(), lib.openblas_get_config().decode()
    except (OSError, AttributeError):
        return "unknown", "unknown"


def main():
    global torch
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--list", action="store_true")
    p.add_argument("--info", action="store_true")
    p.add_argument("--workload")
    p.add_argument("--config")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--min-run-s", type=float, default=0.05)
    a = p.parse_args()
    if a.list:
        for name, config, _ in WORKLOADS:
            print(f"{name}\t{config}")
        return 0
    import torch as _torch
    torch = _torch
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if a.info:
        core, config = openblas_core()
        print(json.dumps({"threads": torch.get_num_threads(), "openblas_core": core,
                          "openblas_config": config, "torch": torch.__version__}))
        return 0
    if not a.workload:
        p.error("need --list, --info or --workload")
    found = False
    for name, config, setup in WORKLOADS:
        if name != a.workload or (a.config is not None and config != a.config):
            continue
        found = True
        torch.manual_seed(0)
        body = setup(dims(config))
        med, mn, n, runs = time_body(body, max(1, a.runs), a.min_run_s)
        print(json.dumps({"name": name, "config": config, "ms": float(f"{med:.6g}"),
                          "min_ms": float(f"{mn:.6g}"), "iters": n, "runs": runs,
                          "threads": torch.get_num_threads()}), flush=True)
    if not found:
        print(f"torch_ops.py: no workload {a.workload} [{a.config}] (see --list)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
