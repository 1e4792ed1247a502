"""The table of bench/run-gpu: reads its JSON lines on stdin (one per workload and precision, holding both
sides' bench lines) and prints times, the ratio torch_ms / liandan_ms and each side's MFU against the best
bf16 GEMM throughput measured in the same run."""
import json
import math
import sys

NAN = float("nan")


def tflops(side, row):
    """TFLOP/s of one side: the model FLOPs of a call (counted by torch_ops.py) over that side's time."""
    s, t = row.get(side), row.get("torch")
    if not s or not t or not t.get("flops"):
        return None
    return t["flops"] / (s["ms"] / 1e3) / 1e12


def main():
    rows = [json.loads(line) for line in sys.stdin if line.strip()]
    gemm = [x for r in rows if r["workload"] == "gpu_gemm" and r["precision"] == "bf16"
            for x in (tflops("liandan", r), tflops("torch", r)) if x]
    ceiling = max(gemm) if gemm else NAN
    print(f"bf16 GEMM ceiling (best of both sides, gpu_gemm): {ceiling:.1f} TFLOP/s")
    print(f"{'workload':14} {'precision':9} {'liandan ms':>11} {'torch ms':>10} {'ratio':>8} "
          f"{'MFU liandan':>12} {'MFU torch':>10}  params")
    for r in rows:
        lside, tside = r["liandan"] or {}, r["torch"] or {}
        lm, tm = lside.get("ms"), tside.get("ms")
        ratio = tm / lm if lm and tm else NAN
        mark = "*" if ratio < 1 else " "
        mfu = {s: (tflops(s, r) or NAN) / ceiling * 100 for s in ("liandan", "torch")}
        pl, pt = lside.get("params", 0), tside.get("params", 0)
        check = "" if pl == pt or not lside or not tside else f"  PARAMS DIFFER: liandan {pl}, torch {pt}"
        print(f"{r['workload']:14} {r['precision']:9} {lm or NAN:11.3f} {tm or NAN:10.3f} {ratio:7.2f}{mark} "
              f"{mfu['liandan']:10.1f} % {mfu['torch']:8.1f} %  {pl}{check}")
    print("ratio = torch_ms / liandan_ms (* : liandan slower); MFU = model FLOPs / time / bf16 GEMM ceiling")
    return 0 if not math.isnan(ceiling) else 1


if __name__ == "__main__":
    sys.exit(main())
