#!/usr/bin/python3
"""PyTorch's side of bench/run-dist: the roformer_lm / vit2d training step under DistributedDataParallel.

  torch_ddp.py --workload roformer_lm|vit2d [--procs 2] [--steps N] [--warmup W] [--overlap-steps K]
               [--bucket-mib M]

Starts --procs processes (torch.multiprocessing.spawn: torchrun's set-up by hand, MASTER_ADDR=127.0.0.1 and a
free port), each with torch.set_num_threads(1), on the gloo backend; rank 0 prints one JSON line. The models
are bench/torch_ops.py's own (imported from it: the same modules, shapes, inits and loss as the rows of the
same name); the global batch is drawn from one seed on every rank and rank r trains on rows [r*B/N, (r+1)*B/N).
A step: forward through DDP, -mean log p(target), backward (DDP all-reduces its buckets as they fill and waits
for them before backward returns), torch.optim.AdamW (lr 1e-3, weight decay 1e-2, foreach=True: the fast
multi-tensor path, as torch_ops.py's adamw_step), zero_grad(set_to_none=True). PyTorch launched at its best:
gradient_as_bucket_view=True (no copy back from the buckets), OMP_WAIT_POLICY=PASSIVE and the glibc malloc
thresholds of bench/run (set by bench/run-dist in the environment).

Timing: W warm-up steps, then N steps timed one by one with DDP's built-in all-reduce (the default path):
"ms" is rank 0's median step. Then K more steps with a communication hook that does the same all-reduce
(average over the ranks) and records, per bucket, the time from the bucket being ready to the all-reduce's
completion: "all_reduce_ms" (summed over buckets, as liandan's last_sync().all_reduce_s) and "wait_ms" (from
the last bucket being ready to backward's return: the communication the backward pass did not hide). The hook
calls from Python, so those K steps are reported apart ("hook_ms") and not in "ms".
"""
import argparse
import json
import os
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOADS = {"roformer_lm": "256x256x4x4x1024x256x16", "vit2d": "128x28x1x4x128x4x4x512x10"}


def build(name, d):
    """bench/torch_ops.py's model for the row `name`, and the global batch (inputs, targets)."""
    import torch
    sys.path.insert(0, HERE)
    import torch_ops
    torch_ops.torch = torch  # torch_ops imports torch in its main(); its model factories read this global
    r = torch_ops._roformer()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if name == "roformer_lm":  # VxDxLxHxFxTxB
        model = r["LM"](d[0], d[1], d[2], d[3], d[4])
        x = torch.randint(0, d[0], (d[6], d[5]), generator=g)
        t = torch.randint(0, d[0], (d[6], d[5], 1), generator=g)
    else:  # vit2d: BxSxCxPxDxLxHxFxK
        model = r["ViT"](d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8])
        x = torch.randn(d[0], d[2], d[1], d[1], generator=g)
        t = torch.randint(0, d[8], (d[0], 1), generator=g)
    return model, x, t


def worker(rank, a, port):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(a.procs))
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo", rank=rank, world_size=a.procs)
    world = a.procs
    config = WORKLOADS[a.workload]
    model, x, t = build(a.workload, [int(v) for v in config.split("x")])
    rows = x.shape[0] // world
    x, t = x[rank * rows:(rank + 1) * rows].contiguous(), t[rank * rows:(rank + 1) * rows].contiguous()
    ddp = DDP(model, bucket_cap_mb=a.bucket_mib, gradient_as_bucket_view=True)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-3, weight_decay=1e-2, foreach=True)

    def step():
        loss = -ddp(x).log_softmax(-1).gather(-1, t).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step_ms = []
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        step()
        if s >= a.warmup:
            step_ms.append((time.perf_counter() - t0) * 1e3)

    # The overlap: the same all-reduce from a hook that records when each bucket was ready and done.
    rec = {"ready": [], "done": []}

    def hook(state, bucket):
        rec["ready"].append(time.perf_counter())
        fut = dist.all_reduce(bucket.buffer().div_(world), async_op=True).get_future()

        def done(f):
            rec["done"].append(time.perf_counter())
            return f.value()[0]
        return fut.then(done)

    reduce_ms, wait_ms, hook_ms, nbuckets = [], [], [], 0
    if a.overlap_steps > 0:
        ddp.register_comm_hook(None, hook)
        for s in range(a.overlap_steps + 1):  # the first, untimed: the hook's own warm-up
            rec["ready"].clear(), rec["done"].clear()
            t0 = time.perf_counter()
            loss = -ddp(x).log_softmax(-1).gather(-1, t).mean()
            loss.backward()
            t_bwd = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if s == 0:
                continue
            hook_ms.append((time.perf_counter() - t0) * 1e3)
            nbuckets = len(rec["ready"])
            reduce_ms.append(sum(d - r for r, d in zip(rec["ready"], rec["done"])) * 1e3)
            wait_ms.append((t_bwd - max(rec["ready"])) * 1e3)

    if rank == 0:
        nparams = sum(p.numel() for p in model.parameters())
        grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        med = lambda v: float(f"{statistics.median(v):.6g}") if v else None  # noqa: E731
        print(json.dumps({"name": a.workload, "config": config, "procs": world, "threads": torch.get_num_threads(),
                          "ms": med(step_ms), "min_ms": float(f"{min(step_ms):.6g}"), "steps": a.steps,
                          "all_reduce_ms": med(reduce_ms), "wait_ms": med(wait_ms), "hook_ms": med(hook_ms),
                          "buckets": nbuckets or None, "bucket_mib": a.bucket_mib, "params": nparams,
                          "grad_bytes": grad_bytes, "wire_bytes_per_rank": 2 * (world - 1) / world * grad_bytes,
                          "backend": "gloo", "torch": torch.__version__}), flush=True)
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads per process")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--overlap-steps", type=int, default=3)
    p.add_argument("--bucket-mib", type=float, default=25)
    a = p.parse_args()
    if a.steps < 1 or a.procs < 1:
        p.error("--steps and --procs must be >= 1")
    import torch.multiprocessing as mp
    mp.spawn(worker, args=(a, free_port()), nprocs=a.procs, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
