"""Export a checkpoint to ONNX parts: ``python -m engine.export CHECKPOINT [options]``.

Example: ``python -m engine.export sam2.1_hiera_tiny.pt --image-size 512 --out exports``
prints each part's file, size and its onnxruntime-vs-torch check.
"""
from __future__ import annotations

import argparse

from ..checkpoint import load_sam2
from ..config import MAX_COND_FRAMES
from ..graph_cache import default_cache_dir
from ..graph_spec import PART_NAMES
from ..memory_layout import MemoryCapacity
from .pipeline import export_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m engine.export", description=__doc__)
    parser.add_argument("checkpoint", help="Meta's checkpoint file (.pt)")
    parser.add_argument("--model", help="model name (default: identified from the file)")
    parser.add_argument("--image-size", type=int, default=None, help="input side (default 1024)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    parser.add_argument("--max-cond-frames", type=int, default=MAX_COND_FRAMES,
                        help="prompted frames kept per object; sets the memory capacity "
                             f"(default {MAX_COND_FRAMES}, as the node and sam2-engine build)")
    parser.add_argument("--spatial", type=int, default=None,
                        help="spatial memory slots (default: from --max-cond-frames)")
    parser.add_argument("--pointers", type=int, default=None,
                        help="object pointer slots (default: from --max-cond-frames)")
    parser.add_argument("--parts", nargs="+", choices=PART_NAMES, default=list(PART_NAMES))
    parser.add_argument("--out", default=None,
                        help="cache folder (default: ~/.cache/sam2_ros/onnx)")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime check")
    parser.add_argument("--force", action="store_true", help="export even if cached")
    args = parser.parse_args(argv)

    model = load_sam2(args.checkpoint, args.model, args.image_size)
    default = MemoryCapacity.for_bank(model.cfg, args.max_cond_frames)
    capacity = MemoryCapacity(args.spatial or default.spatial,
                              default.pointers if args.pointers is None else args.pointers)
    out = args.out or default_cache_dir() / "onnx"
    exported = export_model(model, out, args.precision, capacity, args.parts,
                            check=not args.no_check, force=args.force)
    for name, part in exported.parts.items():
        print(f"{name}: {part.path} ({part.size_bytes / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
