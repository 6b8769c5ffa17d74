"""Is bf16 faster than fp32 on this CPU? The probe the torch runtime uses, and the two parts
bf16 runs (image encoder, memory attention) end to end, appended to a per-CPU table.

    python -m engine.benchmarks.cpu_bf16 [--threads 1] [--size 512] [--out results/cpu_bf16.md]

Times are CPU seconds of this process (``time.process_time``) per call, best of ``--repeats``:
with one thread that is robust to other processes sharing the cores, unlike wall time.
"""
from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import torch

from ..config import get_config
from ..model.sam2 import SAM2Model
from ..runtime import torch_runtime
from ..runtime.torch_runtime import TorchRuntime

OUT = Path(__file__).resolve().parent / "results" / "cpu_bf16.md"
HEADER = ("| CPU | flags | threads | probe bf16/fp32 speed | model, px | image encoder fp32 / "
          "bf16 s | memory attention (7 memories) fp32 / bf16 s | speedup (both parts) | "
          "runtime picks | date |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- "
          "| --- |\n")


def cpu_name() -> tuple[str, str]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("model name")), "unknown CPU")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines()
                      if line.startswith("flags")), []))
    wanted = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return name, " ".join(wanted) or "no AVX-512"


def best_cpu_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def measure(size: int, repeats: int) -> tuple[float, float, float, float]:
    """(encoder fp32, encoder bf16, attention fp32, attention bf16) CPU seconds per call."""
    torch.manual_seed(0)
    model = SAM2Model(get_config("sam2.1_hiera_tiny", image_size=size)).eval()
    runtimes = {"fp32": TorchRuntime(model), "bf16": TorchRuntime(model, precision="bf16")}
    runtimes["bf16"]._low = torch.bfloat16  # measure bf16 itself, whatever the probe chose
    cfg, hw = model.cfg, model.cfg.feat_size ** 2
    image = torch.randn(1, 3, size, size)
    feat = torch.randn(1, cfg.d_model, cfg.feat_size, cfg.feat_size)
    memory = torch.randn(1, 7 * hw + 64, cfg.mem_dim)
    out = []
    with torch.inference_mode():
        for part in ("encode", "attend"):
            for name in ("fp32", "bf16"):
                rt = runtimes[name]
                if part == "encode":
                    out.append(best_cpu_seconds(lambda: rt.encode_image(image), repeats))
                else:
                    out.append(best_cpu_seconds(
                        lambda: rt.attend_memory(feat, feat, memory, memory, 64), repeats))
    return tuple(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.benchmarks.cpu_bf16",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    name, flags = cpu_name()
    probe = torch_runtime.cpu_bf16_probe()
    ef, eb, af, ab = measure(args.size, args.repeats)
    picks = "bf16" if probe.speedup >= torch_runtime.CPU_BF16_MIN_SPEEDUP else "fp32"
    row = (f"| {name} | {flags} | {args.threads} | {probe.speedup:.2f}x | tiny, {args.size} | "
           f"{ef:.2f} / {eb:.2f} | {af:.2f} / {ab:.2f} | {(ef + af) / (eb + ab):.2f}x | "
           f"{picks} | {datetime.date.today().isoformat()} |\n")
    print(probe.describe())
    print(row, end="")
    if not args.out.exists():
        args.out.write_text(
            "# bf16 vs fp32 on CPUs (torch runtime)\n\n"
            "Written by `python -m engine.benchmarks.cpu_bf16` (CPU seconds per call, best of "
            "3, random weights). The probe is the one-time measurement `TorchRuntime` makes "
            "before running bf16 on a CPU (`engine/runtime/torch_runtime.py`): a memory-"
            "attention-sized linear layer under bf16 autocast vs fp32; the runtime picks bf16 "
            f"only at {torch_runtime.CPU_BF16_MIN_SPEEDUP}x or more. One row per CPU and "
            "thread count.\n\n" + HEADER)
    with args.out.open("a") as f:
        f.write(row)
    print(f"appended to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
