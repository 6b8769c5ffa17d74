"""Loading Meta's official SAM 2 / SAM 2.1 checkpoints, unchanged.

A checkpoint is a torch file holding ``{"model": state_dict}`` (``sam2.1_hiera_tiny.pt``, ...).
It is read with ``weights_only=True`` (no arbitrary unpickling) and matched strictly against
the model asked for. Every failure raises ``CheckpointError`` with a message a user can act on:
which file, which model was expected, and what was found instead.
"""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import replace
from pathlib import Path

import torch

from .config import MODELS, PROJECT_MODELS, ModelConfig, get_config

_SHOW_KEYS = 5  # how many missing/unexpected keys an error names


BUNDLED_DIR = Path(__file__).resolve().parent / "weights"


def bundled_checkpoint(model: str | ModelConfig) -> Path | None:
    """The weights this package ships for ``model`` (the project's own models, trained on its
    synthetic world; see engine/weights/TRAINING.md), or None for Meta's models."""
    cfg = get_config(model) if isinstance(model, str) else model
    if cfg.name not in PROJECT_MODELS:
        return None
    path = BUNDLED_DIR / cfg.checkpoint_name
    return path if path.is_file() else None


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used for the model asked for."""


def read_state_dict(path: str | Path, expected: str = "a SAM 2 model") -> dict[str, torch.Tensor]:
    """Read the state dict from an official checkpoint file; ``expected`` names it in errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint file not found: {path} (expected the weights of {expected}; "
            "see the README for the download command)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refused to load {path}: it holds objects other than tensors and plain containers, "
            f"and checkpoints are read with weights_only=True ({_first_line(err)})") from err
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        size = path.stat().st_size
        raise CheckpointError(
            f"could not read checkpoint {path} ({size} bytes): the file is truncated, corrupt or "
            f"not a torch checkpoint; expected {expected} ({_first_line(err)})") from err
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        found = (sorted(payload)[:_SHOW_KEYS] if isinstance(payload, dict)
                 else type(payload).__name__)
        raise CheckpointError(
            f"{path} is not in the official SAM 2 format: expected a dict "
            f"{{'model': state_dict}}, found {found}")
    return payload["model"]


def identify(state: dict[str, torch.Tensor]) -> str | None:
    """The published model whose architecture ``state`` holds, or None if none matches."""
    patch = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        return None
    blocks = {int(k.split(".")[3]) for k in state if k.startswith("image_encoder.trunk.blocks.")}
    version = "2.1" if "no_obj_embed_spatial" in state else "2"
    for name, cfg in MODELS.items():
        if (cfg.version == version and cfg.hiera.embed_dim == patch.shape[0]
                and sum(cfg.hiera.stages) == len(blocks)):
            return name
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _key_report(label: str, keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW_KEYS])
    more = f", ... ({len(keys) - _SHOW_KEYS} more)" if len(keys) > _SHOW_KEYS else ""
    return f"{label} ({len(keys)}): {shown}{more}"


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path,
                 cfg: ModelConfig) -> None:
    """Strictly copy ``state`` into ``model``; explain any mismatch in terms of the file."""
    found = identify(state)
    if found is not None and found != cfg.name:
        raise CheckpointError(
            f"{path} holds the weights of {found}, but model {cfg.name} was asked for "
            f"(pass model={found!r}, or the checkpoint {cfg.checkpoint_name})")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = [p for p in (missing and _key_report("missing keys", missing),
                             unexpected and _key_report("unexpected keys", unexpected)) if p]
        raise CheckpointError(f"{path} does not match model {cfg.name}: " + "; ".join(parts))
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{path} does not match model {cfg.name}: "
                              + _key_report("tensors of the wrong shape", wrong))
    model.load_state_dict(state, strict=True)


def load_model(checkpoint: str | Path, model: str | ModelConfig, image_size: int | None = None,
               device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build model ``model`` (a name from ``engine.config.MODELS`` or a config) and load
    ``checkpoint`` into it. ``image_size`` overrides the config's (1024 as trained)."""
    from .model.sam2 import SAM2Model

    cfg = get_config(model) if isinstance(model, str) else model
    if image_size is not None:
        cfg = replace(cfg, image_size=image_size)
    state = read_state_dict(checkpoint, expected=f"{cfg.name} ({cfg.checkpoint_name})")
    net = SAM2Model(cfg)
    load_weights(net, state, checkpoint, cfg)
    return net.to(device).eval()


def load_sam2(model_or_checkpoint, model_name: str | None = None,
              image_size: int | None = None) -> torch.nn.Module:
    """A SAM2Model as given, or loaded on CPU from a checkpoint path (model identified from
    the file when ``model_name`` is None)."""
    from .model.sam2 import SAM2Model

    if isinstance(model_or_checkpoint, SAM2Model):
        if image_size is not None and image_size != model_or_checkpoint.cfg.image_size:
            raise ValueError(f"image_size {image_size} asked for, but the model given is built "
                             f"for {model_or_checkpoint.cfg.image_size}")
        return model_or_checkpoint
    if model_name is None:
        model_name = identify(read_state_dict(model_or_checkpoint))
        if model_name is None:
            raise CheckpointError(f"{model_or_checkpoint}: not a known SAM 2 model; pass "
                                  "model_name=...")
    return load_model(model_or_checkpoint, model_name, image_size=image_size)
