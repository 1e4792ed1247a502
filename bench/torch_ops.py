#!/usr/bin/python3
"""PyTorch's side of bench/run and bench/run-gpu: one process runs one workload and prints one JSON line.

  torch_ops.py --list                            every workload, "NAME<TAB>CONFIG" per line
  torch_ops.py --info                            threads and the OpenBLAS core in use (JSON)
  torch_ops.py --workload NAME --config CONFIG   times it: {"name","config","ms","min_ms","iters","runs",
    [--threads N] [--runs R] [--min-run-s S]       "threads","device","precision"} (+ "flops","params": gpu_*)
    [--device cpu|cuda] [--precision f32|tf32|bf16]

The (name, config) pairs mirror bench/bench_ops.cpp: the config string holds the shapes and
dims(config) reads its integers in order. To add a workload, add one @workload entry here and one
`reg` entry in bench_ops.cpp with the same name and config strings. A setup function builds the
inputs and returns the timed body.

bench/run starts this with OMP_WAIT_POLICY=PASSIVE and a GLIBC_TUNABLES that keeps large blocks
out of mmap (PyTorch has no caching CPU allocator), one fresh process per workload.

The gpu_* workloads (gpu_gemm, gpu_attention, gpu_lm, gpu_unet; bench/run-gpu) run on --device (cuda, or
cpu with tiny configs to check them) at --precision: f32 (no TF32 anywhere), tf32 (TF32 matmuls and convs),
bf16 (forward under torch.autocast(bfloat16), f32 parameters; gemm/attention take bf16 tensors). PyTorch is
the reference peer, so it runs at its best: cudnn.benchmark, fused AdamW, scaled_dot_product_attention.
They also accept a --config that is not registered (smaller shapes), and their JSON line carries "flops"
(the model FLOPs of one call, counted here; MFU = flops / time / bf16 GEMM ceiling) and "params". The other
workloads are CPU-only: they refuse a --device or --precision other than the defaults.

Timing (identical in bench_ops.cpp): warm up (>= 2 calls and >= 0.1 s); pick n calls per run so a
run lasts >= min_run_s (from the warm-up's mean call time); do `runs` runs (fewer, but >= 3, when
they would take over 2 s); report the median (and the min) of the per-call times, in ms. On cuda every
call ends with torch.cuda.synchronize(), so a call's time is that of finished GPU work.
"""
import argparse
import contextlib
import json
import math
import re
import sys
import time
import warnings

torch = None  # imported in main(), after --list (which needs no torch)
DEVICE, PRECISION = "cpu", "f32"  # --device, --precision (set in main(); the setups read them)

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


def autocast():
    """The forward's precision context: bf16 autocast (PyTorch's mixed-precision recipe) or none."""
    if PRECISION == "bf16":
        return torch.autocast(device_type=DEVICE, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sdpa_attention(q, k, v, causal):
    """F.scaled_dot_product_attention (flash / memory-efficient kernels on cuda); torch < 2.0 has none,
    so there (the cpu checks of the gpu_* workloads) the same math is written out."""
    F = torch.nn.functional
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        T = q.shape[-2]
        s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return s.softmax(-1) @ v


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

# ---- RoFormer family (issue #3). The models are written out in torch 1.13 (no scaled_dot_product_attention):
# attention by matmul + softmax with an explicit causal mask, RoPE with the interleaved pairing (RoFormer),
# nn.Linear / nn.LayerNorm / nn.Conv2d default inits, token embedding N(0, 0.02^2), plain SGD.
# gpu_lm builds the LM with sdpa=True on cuda (scaled_dot_product_attention: PyTorch at its best) and
# cache_tables=True; the CPU workloads keep the explicit attention and recompute the tables each forward.
_ROFORMER = {}


def _roformer():
    if _ROFORMER:
        return _ROFORMER
    nn, F = torch.nn, torch.nn.functional

    def rope(x, cos, sin):  # interleaved pairs (x_2i, x_2i+1)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), -1).flatten(-2)

    def tables_1d(T, hd, base=10000.0):
        f = base ** (-torch.arange(hd // 2, dtype=torch.float64) * 2 / hd)
        a = torch.arange(T, dtype=torch.float64)[:, None] * f
        return a.cos().float(), a.sin().float()

    cached = {}

    def tables_1d_on(T, hd, device):  # tables_1d moved to the device once per (T, hd, device)
        key = (T, hd, str(device))
        if key not in cached:
            cached[key] = tuple(t.to(device) for t in tables_1d(T, hd))
        return cached[key]

    def tables_2d(g, hd, base):  # first hd/4 pairs rotate by x (column), the last hd/4 by y (row)
        f = base ** (-torch.arange(hd // 4, dtype=torch.float64) * 4 / hd)
        c = torch.arange(g, dtype=torch.float64)
        ys, xs = c.repeat_interleave(g), c.repeat(g)
        a = torch.cat((xs[:, None] * f, ys[:, None] * f), 1)
        return a.cos().float(), a.sin().float()

    class MHA(nn.Module):
        def __init__(self, d, h, causal, kind="softmax", sdpa=False):
            super().__init__()
            self.h, self.causal, self.kind, self.sdpa = h, causal, kind, sdpa
            self.q, self.k, self.v, self.o = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

        def forward(self, x, cos, sin):
            B, T, C = x.shape
            def heads(t):
                return t.view(B, T, self.h, C // self.h).transpose(1, 2)
            q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
            if self.kind == "softmax" and self.sdpa:
                # RoPE in q's dtype (bf16 under autocast, as bf16 models write it: no f32 round trip), then
                # PyTorch's fused attention (autocast runs it in bf16: the flash kernel).
                cos, sin = cos.to(q.dtype), sin.to(q.dtype)
                o = sdpa_attention(rope(q, cos, sin), rope(k, cos, sin), v, self.causal)
            elif self.kind == "softmax":
                q, k = rope(q, cos, sin), rope(k, cos, sin)
                s = q @ k.transpose(-2, -1) / math.sqrt(C // self.h)
                if self.causal:
                    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
                o = s.softmax(-1) @ v
            else:  # RoFormer eq. 19: phi = elu + 1, RoPE in the numerator; causal by running sums (cumsum)
                fq, fk = F.elu(q) + 1, F.elu(k) + 1
                rq, rk = rope(fq, cos, sin), rope(fk, cos, sin)
                if self.causal:
                    num = torch.einsum("bhtd,bhtde->bhte", rq, torch.einsum("bhtd,bhte->bhtde", rk, v).cumsum(2))
                    den = (fq * fk.cumsum(2)).sum(-1, keepdim=True)
                else:
                    num = rq @ (rk.transpose(-2, -1) @ v)
                    den = fq @ fk.sum(2, keepdim=True).transpose(-2, -1)
                o = num / den
            return self.o(o.transpose(1, 2).reshape(B, T, C))

    class Block(nn.Module):
        def __init__(self, d, h, ff, causal, sdpa=False):
            super().__init__()
            self.ln1, self.attn, self.ln2 = nn.LayerNorm(d), MHA(d, h, causal, sdpa=sdpa), nn.LayerNorm(d)
            self.fc1, self.fc2 = nn.Linear(d, ff), nn.Linear(ff, d)

        def forward(self, x, cos, sin):
            x = x + self.attn(self.ln1(x), cos, sin)
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))

    class LM(nn.Module):
        def __init__(self, V, d, L, h, ff, sdpa=False, cache_tables=False):
            super().__init__()
            self.hd, self.cache_tables = d // h, cache_tables
            self.emb = nn.Embedding(V, d)
            nn.init.normal_(self.emb.weight, std=0.02)
            self.blocks = nn.ModuleList(Block(d, h, ff, True, sdpa) for _ in range(L))
            self.ln_f, self.head = nn.LayerNorm(d), nn.Linear(d, V)

        def forward(self, x):
            if self.cache_tables:
                cos, sin = tables_1d_on(x.shape[1], self.hd, x.device)
            else:
                cos, sin = tables_1d(x.shape[1], self.hd)
            h = self.emb(x)
            for b in self.blocks:
                h = b(h, cos, sin)
            return self.head(self.ln_f(h))

    class ViT(nn.Module):
        def __init__(self, S, C, P, d, L, h, ff, K, base=100.0):
            super().__init__()
            self.g, self.hd, self.base = S // P, d // h, base
            self.patch = nn.Conv2d(C, d, P, stride=P)
            self.blocks = nn.ModuleList(Block(d, h, ff, False) for _ in range(L))
            self.ln_f, self.head = nn.LayerNorm(d), nn.Linear(d, K)

        def forward(self, x):
            cos, sin = tables_2d(self.g, self.hd, self.base)
            h = self.patch(x).flatten(2).transpose(1, 2)
            for b in self.blocks:
                h = b(h, cos, sin)
            return self.head(self.ln_f(h).mean(1))

    _ROFORMER.update(MHA=MHA, LM=LM, ViT=ViT, tables_1d=tables_1d)
    return _ROFORMER


def _sgd_step(loss, params, lr=0.01):
    loss.backward()
    with torch.no_grad():
        for p in params:
            p.add_(p.grad, alpha=-lr)
            p.grad = None


def cpu_bf16(on):
    """The *_bf16 workloads' forward and loss: under torch.autocast("cpu", dtype=torch.bfloat16) (PyTorch's CPU
    mixed precision: bf16 matmuls and convs on oneDNN, f32 parameters), against liandan's ld::Autocast(bf16)."""
    return torch.autocast("cpu", dtype=torch.bfloat16) if on else contextlib.nullcontext()


def norms_in_f32(model):
    """torch 1.13's CPU autocast leaves layer_norm / group_norm out of its f32 list, so a bf16 conv output (the ViT's
    patch embedding, every U-Net conv) meeting an f32-weight norm is an error there. Later PyTorch versions (and
    liandan) run norms in f32: their inputs are cast to f32 here, as those versions do."""
    nn = torch.nn
    for m in model.modules():
        if isinstance(m, (nn.LayerNorm, nn.GroupNorm)):
            m.register_forward_pre_hook(lambda mod, inp: tuple(t.float() for t in inp))
    return model


# roformer_lm: config VxDxLxHxFxTxB; one SGD step of the pre-LN RoPE causal LM. roformer_lm_bf16: the same
# under CPU bf16 autocast.
def _roformer_lm(bf16):
    def setup(d):
        model = _roformer()["LM"](d[0], d[1], d[2], d[3], d[4])
        x, t = torch.randint(0, d[0], (d[6], d[5])), torch.randint(0, d[0], (d[6], d[5], 1))
        params = list(model.parameters())

        def body():
            with cpu_bf16(bf16):
                loss = -model(x).log_softmax(-1).gather(-1, t).mean()
            _sgd_step(loss, params)
        return body
    return setup


workload("roformer_lm", "256x256x4x4x1024x256x16")(_roformer_lm(False))
workload("roformer_lm_bf16", "256x256x4x4x1024x256x16")(_roformer_lm(True))

# ---- the LM's GEMMs: config MxKxN + op(A) op(B) (n/t). gemm_bf16: bf16 matmul into a bf16 out= (oneDNN's
# AVX512-BF16 kernels); gemm_f32: f32 matmul (OpenBLAS sgemm). As bench_ops.cpp's kLmGemmConfigs.
LM_GEMM_CONFIGS = ("4096x256x768nt", "4096x256x1024nt", "4096x1024x256nt", "4096x256x256nt",
                   "4096x768x256nn", "4096x256x1024nn", "4096x1024x256nn",
                   "256x4096x768tn", "1024x4096x256tn", "256x4096x1024tn")


def _gemm(dtype):
    def setup(d, config):
        M, K, N = d
        ta, tb = config[-2] == "t", config[-1] == "t"
        a = rn(K, M).t() if ta else rn(M, K)
        b = rn(N, K).t() if tb else rn(K, N)
        a, b = a.to(dtype), b.to(dtype)
        c = torch.empty(M, N, dtype=dtype)
        return lambda: torch.matmul(a, b, out=c)
    return setup


for _c in LM_GEMM_CONFIGS:
    workload("gemm_bf16", _c)(lambda d, _c=_c: _gemm(torch.bfloat16)(d, _c))
    workload("gemm_f32", _c)(lambda d, _c=_c: _gemm(torch.float32)(d, _c))


# adamw_step / amos_step: config VxDxLxHxF; one optimizer step over the reference RoFormer LM's
# parameters with fixed random gradients. AdamW: torch.optim.AdamW (foreach=True: the multi-tensor path,
# faster than the default per-tensor loop on CPU here). Amos: PyTorch has none; this is a direct port of the
# reference update (jestimator amos.py) with factored slots, in torch's in-place ops, as a user would write it.
def _lm_params(d):
    model = _roformer()["LM"](d[0], d[1], d[2], d[3], d[4])
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    return params


@workload("adamw_step", "256x256x4x4x1024")
def _(d):
    opt = torch.optim.AdamW(_lm_params(d), lr=1e-3, weight_decay=1e-2, foreach=True)
    return opt.step


class _Amos:
    def __init__(self, params, lr, beta=0.999, zeta=0.25, eps=2.0 ** -125):
        self.params, self.lr, self.beta, self.zeta, self.eps, self.count = params, lr, beta, zeta, eps, 0
        self.state = []
        for p in params:
            shape = (p.shape[0],) + (1,) * (p.dim() - 1) if p.dim() >= 2 else ()
            eta = p.detach().square().mean().sqrt().item() if p.dim() >= 2 else 0.5
            self.state.append((torch.zeros(shape), torch.zeros(shape), eta))

    def step(self):
        with torch.no_grad():
            self._step()

    def _step(self):
        self.count += 1
        xi, bc = self.lr, 1 - self.beta ** self.count
        for p, (v, b, eta) in zip(self.params, self.state):
            g = p.grad
            g2 = g.square().mean(dim=tuple(range(1, g.dim())), keepdim=True) if v.dim() else g.square().mean()
            v.mul_(self.beta).add_(g2, alpha=1 - self.beta)
            r = bc / v.clamp(min=self.eps)
            gamma = torch.rsqrt(1 + self.zeta * math.sqrt(xi) * b) * (xi * xi) * r * g2
            init_lr = xi * eta
            d = 1 / (1 + self.zeta * math.sqrt(init_lr) * b)
            p.add_(d * (-init_lr * r.sqrt() * g - 0.5 * gamma * p))
            b.add_(gamma * (1 + b))


@workload("amos_step", "256x256x4x4x1024")
def _(d):
    return _Amos(_lm_params(d), lr=1e-3).step


# vit2d: config BxSxCxPxDxLxHxFxK; one SGD step of the ViT with 2-D RoPE, mean pooling. vit2d_bf16: under CPU
# bf16 autocast.
def _vit2d(bf16):
    def setup(d):
        model = _roformer()["ViT"](d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8])
        if bf16:
            norms_in_f32(model)
        x, t = rn(d[0], d[2], d[1], d[1]), torch.randint(0, d[8], (d[0], 1))
        params = list(model.parameters())

        def body():
            with cpu_bf16(bf16):
                loss = -model(x).log_softmax(-1).gather(-1, t).mean()
            _sgd_step(loss, params)
        return body
    return setup


workload("vit2d", "128x28x1x4x128x4x4x512x10")(_vit2d(False))
workload("vit2d_bf16", "128x28x1x4x128x4x4x512x10")(_vit2d(True))


# linear_attn_T / softmax_attn_T: config BxTxDxH; one causal RoPE attention layer, forward + backward.
def _attn_layer(kind):
    def setup(d):
        r = _roformer()
        m = r["MHA"](d[2], d[3], True, kind)
        x, g = rn(d[0], d[1], d[2], rg=True), rn(d[0], d[1], d[2])
        params = list(m.parameters())

        def body():
            cos, sin = r["tables_1d"](d[1], d[2] // d[3])
            m(x, cos, sin).backward(g)
            clear_grads(x, *params)
        return body
    return setup


for _kind in ("linear", "softmax"):
    for _T in (256, 1024, 4096):
        workload(f"{_kind}_attn_{_T}", f"1x{_T}x256x4")(_attn_layer(_kind))


# ---- DDPM U-Net (issue #6; diffusion/unet.h): config BxCxHxW,chBASExM1xM2xM3,resN,gnG,attnR
# 32/64/128 channels, 2 res blocks per level, GroupNorm(8), self-attention (1 head) at 7x7 and in the middle,
# stride-2 conv downsampling, nearest upsampling + conv, dropout 0, time embedding 4 * 32. Module and
# parameter names match liandan's, so a liandan state dict loads into this network.
UNET_CONFIG = "64x1x28x28,ch32x1x2x4,res2,gn8,attn7"
_UNET = {}


def _unet():
    if _UNET:
        return _UNET
    nn, F = torch.nn, torch.nn.functional

    def timestep_embedding(t, dim):  # DDPM's get_timestep_embedding, in double
        half = dim // 2
        w = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64, device=t.device) / (half - 1))
        a = t.double()[:, None] * w[None]
        return torch.cat((a.sin(), a.cos()), 1).float()

    class ResBlock(nn.Module):
        def __init__(self, cin, cout, E, G):
            super().__init__()
            self.norm1, self.conv1 = nn.GroupNorm(G, cin), nn.Conv2d(cin, cout, 3, padding=1)
            self.temb_proj, self.norm2 = nn.Linear(E, cout), nn.GroupNorm(G, cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
            self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

        def forward(self, x, temb_act):
            h = self.conv1(F.silu(self.norm1(x))) + self.temb_proj(temb_act)[:, :, None, None]
            h = self.conv2(F.silu(self.norm2(h)))
            return (x if self.skip is None else self.skip(x)) + h

    class MHA(nn.Module):  # no position encoding; q, k, v, o projections as liandan's MultiheadAttention
        def __init__(self, C, heads, sdpa=False):
            super().__init__()
            self.h, self.sdpa = heads, sdpa
            self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(C, C) for _ in range(4))

        def forward(self, x):
            B, T, C = x.shape
            def heads(t):
                return t.view(B, T, self.h, C // self.h).transpose(1, 2)
            q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
            if self.sdpa:
                o = sdpa_attention(q, k, v, False)
            else:
                o = ((q @ k.transpose(-2, -1)) / math.sqrt(C // self.h)).softmax(-1) @ v
            return self.o_proj(o.transpose(1, 2).reshape(B, T, C))

    class AttnBlock(nn.Module):
        def __init__(self, C, heads, G, sdpa=False):
            super().__init__()
            self.norm, self.attn = nn.GroupNorm(G, C), MHA(C, heads, sdpa)

        def forward(self, x):
            B, C, H, W = x.shape
            h = self.attn(self.norm(x).view(B, C, H * W).transpose(1, 2))
            return x + h.transpose(1, 2).reshape(B, C, H, W)

    class Level(nn.Module):
        def __init__(self):
            super().__init__()
            self.res, self.attn, self.resample = nn.ModuleList(), None, None

    class UNet(nn.Module):
        def __init__(self, cin, base, mult, nres, G, size, attn_res, heads=1, sdpa=False):
            super().__init__()
            E, L = 4 * base, len(mult)
            self.base = base
            self.temb_fc1, self.temb_fc2 = nn.Linear(base, E), nn.Linear(E, E)
            self.conv_in = nn.Conv2d(cin, base, 3, padding=1)
            skips, ch = [base], base
            self.down, self.up = nn.ModuleList(), nn.ModuleList()
            for i in range(L):
                lv, out, use_attn = Level(), base * mult[i], (size >> i) in attn_res
                lv.attn = nn.ModuleList() if use_attn else None
                for _ in range(nres):
                    lv.res.append(ResBlock(ch, out, E, G))
                    ch = out
                    if use_attn:
                        lv.attn.append(AttnBlock(ch, heads, G, sdpa))
                    skips.append(ch)
                if i + 1 < L:
                    lv.resample = nn.Conv2d(ch, ch, 3, stride=2, padding=1)
                    skips.append(ch)
                self.down.append(lv)
            self.mid1, self.mid_attn = ResBlock(ch, ch, E, G), AttnBlock(ch, heads, G, sdpa)
            self.mid2 = ResBlock(ch, ch, E, G)
            for i in reversed(range(L)):
                lv, out, use_attn = Level(), base * mult[i], (size >> i) in attn_res
                lv.attn = nn.ModuleList() if use_attn else None
                for _ in range(nres + 1):
                    lv.res.append(ResBlock(ch + skips.pop(), out, E, G))
                    ch = out
                    if use_attn:
                        lv.attn.append(AttnBlock(ch, heads, G, sdpa))
                if i > 0:
                    lv.resample = nn.Conv2d(ch, ch, 3, padding=1)
                self.up.append(lv)
            self.norm_out, self.conv_out = nn.GroupNorm(G, ch), nn.Conv2d(ch, cin, 3, padding=1)

        def forward(self, x, t):
            temb = self.temb_fc2(F.silu(self.temb_fc1(timestep_embedding(t, self.base))))
            temb_act = F.silu(temb)
            h = self.conv_in(x)
            hs = [h]
            for lv in self.down:
                for r, blk in enumerate(lv.res):
                    h = blk(h, temb_act)
                    if lv.attn is not None:
                        h = lv.attn[r](h)
                    hs.append(h)
                if lv.resample is not None:
                    h = lv.resample(h)
                    hs.append(h)
            h = self.mid2(self.mid_attn(self.mid1(h, temb_act)), temb_act)
            for lv in self.up:
                for r, blk in enumerate(lv.res):
                    h = blk(torch.cat((h, hs.pop()), 1), temb_act)
                    if lv.attn is not None:
                        h = lv.attn[r](h)
                if lv.resample is not None:
                    h = lv.resample(F.interpolate(h, scale_factor=2, mode="nearest"))
            return self.conv_out(F.silu(self.norm_out(h)))

    _UNET.update(UNet=UNet, AttnBlock=AttnBlock)
    return _UNET


def _unet_from(d, sdpa=False):
    return _unet()["UNet"](d[1], d[4], (d[5], d[6], d[7]), d[8], d[9], d[2], (d[10],), sdpa=sdpa)


# unet_ddpm: one DDPM training step without the optimizer: t ~ U{0..999}, eps ~ N(0, I), x_t from the linear
# beta schedule, MSE(eps_theta(x_t, t), eps), backward into every parameter, grads cleared.
# unet_ddpm_bf16: the same with the forward and the loss under CPU bf16 autocast.
def _unet_ddpm(bf16):
    def setup(d):
        model, B = _unet_from(d), d[0]
        if bf16:
            norms_in_f32(model)
        x0 = rn(B, d[1], d[2], d[3])
        abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0).float()
        params = list(model.parameters())

        def body():
            t = torch.randint(0, 1000, (B,))
            eps = torch.randn_like(x0)
            a = abar[t].view(B, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
            with cpu_bf16(bf16):
                loss = torch.nn.functional.mse_loss(model(xt, t.float()), eps)
            loss.backward()
            for p in params:
                p.grad = None
        return body
    return setup


workload("unet_ddpm", UNET_CONFIG)(_unet_ddpm(False))
workload("unet_ddpm_bf16", UNET_CONFIG)(_unet_ddpm(True))


# unet_sample: one network evaluation of a sampler step (no grad, eval mode); 50 DDIM steps = 50 calls.
@workload("unet_sample", UNET_CONFIG)
def _(d):
    model, B = _unet_from(d).eval(), d[0]
    x, t = rn(B, d[1], d[2], d[3]), torch.full((B,), 500.0)

    def body():
        with torch.no_grad():
            model(x, t)
    return body


# ---- GPU workloads (issue #9; bench/run-gpu): liandan vs PyTorch eager on one GPU, same shapes and precision.
# Every tensor goes to DEVICE (cpu runs them too, with tiny configs); main() adds torch.cuda.synchronize() to
# each call on cuda. A setup hangs "flops" (the model FLOPs of one call) and "params" on its body for the
# JSON line; run-gpu reports MFU = flops / time / the bf16 GEMM ceiling (gpu_gemm bf16).
def _with(body, flops, params=0):
    body.flops, body.params = int(flops), int(params)
    return body


def _adamw(params):
    # fused=True on cuda: one multi-tensor kernel per step (PyTorch's fastest AdamW); foreach on cpu.
    if DEVICE == "cuda":
        return torch.optim.AdamW(params, lr=1e-4, fused=True)
    return torch.optim.AdamW(params, lr=1e-4, foreach=True)


def _train_step(loss_fn, opt):
    with autocast():  # forward only; backward outside the autocast block, as PyTorch's AMP recipe says
        loss = loss_fn()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _dtype():  # gemm / attention inputs: bf16 tensors at bf16, f32 otherwise (TF32 or not by the flags)
    return torch.bfloat16 if PRECISION == "bf16" else torch.float32


# gpu_gemm: config MxKxN, [M,K] @ [K,N], the result discarded: the GEMM ceiling of the MFU.
def gpu_gemm_flops(d):
    return 2 * d[0] * d[1] * d[2]


@workload("gpu_gemm", "8192x8192x8192")
def _(d):
    a = torch.randn(d[0], d[1], device=DEVICE, dtype=_dtype())
    b = torch.randn(d[1], d[2], device=DEVICE, dtype=_dtype())
    return _with(lambda: a @ b, gpu_gemm_flops(d))


# gpu_attention: config BxHxTxD; causal scaled_dot_product_attention forward + backward on [B,H,T,D] q, k, v.
# FLOPs: forward QK^T and PV are 2*T*T*D each per (b, h), halved for causality: 2*B*H*T*T*D; backward is 2.5x
# the forward (dV, dP, dQ, dK: four matmuls, plus recomputing P = QK^T): 5*B*H*T*T*D; total 7*B*H*T*T*D.
def gpu_attention_flops(d):
    B, H, T, D = d[:4]
    return 7 * B * H * T * T * D


@workload("gpu_attention", "16x12x1024x64")
def _(d):
    B, H, T, D = d[:4]
    q, k, v = (torch.randn(B, H, T, D, device=DEVICE, dtype=_dtype(), requires_grad=True) for _ in range(3))
    g = torch.randn(B, H, T, D, device=DEVICE, dtype=_dtype())

    def body():
        sdpa_attention(q, k, v, True).backward(g)
        clear_grads(q, k, v)
    return _with(body, gpu_attention_flops(d))


# gpu_lm: config VxDxLxHxFxTxB; one training step of the RoFormer LM (as roformer_lm) with AdamW (lr 1e-4):
# forward under autocast at bf16, backward, fused AdamW step, grads set to None. Attention by SDPA on cuda;
# the RoPE tables are computed once (f64 on the cpu, as tables_1d) and cached on the device, so the timed
# step does no host work or host-to-device copy for them (liandan recomputes its tables each forward; a
# 1024x32 table is negligible either way, but an unpinned copy would stall PyTorch's launch queue).
# FLOPs: 6*N*B*T (N = parameters without the token embedding: 2 forward + 4 backward per parameter and
# token) + 6*L*B*T*T*D (attention QK^T and PV: 4*T*D forward per token and layer, 12*T*D with the
# backward, halved for causality).
def gpu_lm_flops(d, model):
    V, D, L, H, F, T, B = d[:7]
    n = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("emb."))
    return 6 * n * B * T + 6 * L * B * T * T * D


@workload("gpu_lm", "256x768x12x12x3072x1024x16")
def _(d):
    V, D, L, H, F, T, B = d[:7]
    model = _roformer()["LM"](V, D, L, H, F, sdpa=DEVICE == "cuda", cache_tables=True).to(DEVICE)
    x = torch.randint(0, V, (B, T), device=DEVICE)
    t = torch.randint(0, V, (B, T, 1), device=DEVICE)
    params = list(model.parameters())
    opt = _adamw(params)

    def body():
        _train_step(lambda: -model(x).log_softmax(-1).gather(-1, t).mean(), opt)
    return _with(body, gpu_lm_flops(d, model), sum(p.numel() for p in params))


# gpu_unet: config as UNET_CONFIG; the DDPM training step of unet_ddpm (same schedule and loss) plus an AdamW
# step (lr 1e-4) and zero_grad, forward under autocast at bf16, the AttnBlocks' attention by SDPA on cuda.
# FLOPs: the forward's, counted once at setup by forward hooks on one no-grad forward pass of the config's
# shapes on the device: 2 * MACs of every Conv2d and Linear, plus 4*B*T*T*C per AttnBlock (QK^T and PV,
# T = H*W at its resolution, C its channels); the training step is 3x the forward.
def gpu_unet_flops(model, x, t):
    nn, fwd = torch.nn, [0]

    def conv(m, inp, out):
        fwd[0] += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m, inp, out):
        fwd[0] += 2 * out.numel() * m.in_features

    def attn(m, inp, out):
        B, C, H, W = inp[0].shape
        fwd[0] += 4 * B * (H * W) ** 2 * C

    kinds = ((nn.Conv2d, conv), (nn.Linear, linear), (_unet()["AttnBlock"], attn))
    hooks = [m.register_forward_hook(f) for m in model.modules() for cls, f in kinds if isinstance(m, cls)]
    with torch.no_grad():
        model(x, t)
    for h in hooks:
        h.remove()
    return 3 * fwd[0]


@workload("gpu_unet", "128x3x32x32,ch128x1x2x2,res2,gn32,attn16")
def _(d):
    model, B = _unet_from(d, sdpa=DEVICE == "cuda").to(DEVICE), d[0]
    x0 = torch.randn(B, d[1], d[2], d[3], device=DEVICE)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0).float().to(DEVICE)
    params = list(model.parameters())
    opt = _adamw(params)
    flops = gpu_unet_flops(model, x0, torch.full((B,), 500.0, device=DEVICE))

    def loss():
        t = torch.randint(0, 1000, (B,), device=DEVICE)
        eps = torch.randn_like(x0)
        a = abar[t].view(B, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        return torch.nn.functional.mse_loss(model(xt, t.float()), eps)
    return _with(lambda: _train_step(loss, opt), flops, sum(p.numel() for p in params))


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


def setup_device(a):
    """Applies --device / --precision: the settings the setups read, and PyTorch's backend flags on cuda."""
    global DEVICE, PRECISION
    DEVICE, PRECISION = a.device, a.precision
    if DEVICE != "cuda":
        return
    if not torch.cuda.is_available():
        sys.exit("torch_ops.py: --device cuda, but this PyTorch sees no CUDA device")
    torch.backends.cudnn.benchmark = True  # the best-launched peer: cuDNN picks its fastest conv algorithms
    if PRECISION in ("f32", "tf32"):  # bf16: autocast runs every matmul and conv in bf16; flags left as they are
        with warnings.catch_warnings():  # torch >= 2.9 prefers fp32_precision; the legacy flags still work
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32 = PRECISION == "tf32"
            torch.backends.cudnn.allow_tf32 = PRECISION == "tf32"


def synced(body):
    """body, then torch.cuda.synchronize(): on cuda a call's time is that of finished GPU work."""
    def call():
        body()
        torch.cuda.synchronize()
    return call


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
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--precision", choices=("f32", "tf32", "bf16"), default="f32")
    a = p.parse_args()
    if a.list:
        for name, config, _ in WORKLOADS:
            print(f"{name}\t{config}")
        return 0
    import torch as _torch
    torch = _torch
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    setup_device(a)
    if a.info:
        core, config = openblas_core()
        info = {"threads": torch.get_num_threads(), "openblas_core": core,
                "openblas_config": config, "torch": torch.__version__}
        if DEVICE == "cuda":
            info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                        cudnn=torch.backends.cudnn.version())
        print(json.dumps(info))
        return 0
    if not a.workload:
        p.error("need --list, --info or --workload")
    gpu = a.workload.startswith("gpu_")
    if not gpu and (DEVICE, PRECISION) != ("cpu", "f32"):
        p.error(f"{a.workload} is a CPU workload: only the gpu_* workloads take --device / --precision")
    runs = [(name, config, setup) for name, config, setup in WORKLOADS
            if name == a.workload and (a.config is None or config == a.config)]
    if not runs and gpu and a.config is not None:  # a gpu_* workload at shapes of the caller's choosing
        runs = [(name, a.config, setup) for name, _, setup in WORKLOADS if name == a.workload][:1]
    if not runs:
        print(f"torch_ops.py: no workload {a.workload} [{a.config}] (see --list)", file=sys.stderr)
        return 3
    for name, config, setup in runs:
        torch.manual_seed(0)
        body = setup(dims(config))
        extra = {"flops": body.flops, "params": body.params} if gpu else {}
        if DEVICE == "cuda":
            torch.cuda.synchronize()  # the setup's work is not the first call's
            body = synced(body)
        med, mn, n, r = time_body(body, max(1, a.runs), a.min_run_s)
        print(json.dumps({"name": name, "config": config, "ms": float(f"{med:.6g}"),
                          "min_ms": float(f"{mn:.6g}"), "iters": n, "runs": r,
                          "threads": torch.get_num_threads(), "device": DEVICE, "precision": PRECISION,
                          **extra}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
