"""Meta's reference SAM 2 (PyPI ``sam2==1.1.0``) as the fidelity oracle, test-only.

``build_oracle`` builds the reference model from Meta's own config with random weights: every
parameter and buffer is perturbed with seeded noise, so zero- or one-initialised tensors (biases,
norms, layer scales, learned embeddings) take part in the comparison too.
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

from engine.config import ModelConfig, get_config, reference_config_name

# Per-component fp32 tolerance promised by the spec.
ATOL = 1e-4


def _perturb(module: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, tensor in sorted(module.state_dict(keep_vars=True).items()):
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=gen) * std)


@functools.lru_cache(maxsize=8)
def build_oracle(name: str, image_size: int = 256, seed: int = 0) -> torch.nn.Module:
    """The reference SAM2Base for model ``name`` (our naming, e.g. ``sam2.1_hiera_tiny``)."""
    from sam2.build_sam import build_sam2

    cfg = get_config(name, image_size=image_size)
    model = build_sam2(reference_config_name(cfg), ckpt_path=None, device="cpu",
                       hydra_overrides_extra=[f"++model.image_size={image_size}"])
    _perturb(model, seed)
    return model.eval()


def oracle_config(name: str, image_size: int = 256) -> ModelConfig:
    return get_config(name, image_size=image_size)


def sub_state_dict(state: dict, prefix: str) -> dict:
    """Entries of ``state`` under ``prefix.``, with the prefix removed."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in state.items() if k.startswith(p)}


def save_official_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    """Write ``model``'s weights the way Meta publishes them: ``{"model": state_dict}``."""
    torch.save({"model": model.state_dict()}, path)
    return path


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}"
    return (a.float() - b.float()).abs().max().item()
