"""Shared set-up of the export and runtime tests: a tiny model at a small image size, with
the oracle's (perturbed, random) weights, loaded from an official-format file, and its
export cached under pytest's session temp folder (the second test module reuses it)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.checkpoint import load_model
from engine.export import export_model
from oracle import build_oracle, save_official_checkpoint

MODEL = "sam2.1_hiera_tiny"
SIZE = 128  # h = 8: 64 tokens per spatial memory
FEAT = SIZE // 16
HW = FEAT * FEAT


def single_thread():
    """Generator for a module-scoped fixture: torch on one thread while the module runs.

    These tests run many small ops; on 2 shared cores two threads spin against each other
    (measured 30x slower under load), one thread does not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(tmp_path_factory) -> torch.nn.Module:
    root = tmp_path_factory.getbasetemp() / "tiny_checkpoint"
    root.mkdir(exist_ok=True)
    path = root / f"{MODEL}.pt"
    if not path.exists():
        with torch.random.fork_rng():  # the reference initialises from the global generator
            torch.manual_seed(0)
            save_official_checkpoint(build_oracle(MODEL, SIZE), path)
    return load_model(path, MODEL, image_size=SIZE)


def cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "sam2_cache"


def tiny_export(model, tmp_path_factory):
    return export_model(model, cache_root(tmp_path_factory) / "onnx", log=print)


def tiny_fixtures():
    """Fixtures of a test module over the tiny model: ``_one_thread`` (autouse, one torch
    thread for the module), ``model`` and ``exported`` (its ONNX export, cached across modules).
    Use as ``_one_thread, model, exported = tiny_fixtures()``."""

    @pytest.fixture(scope="module", autouse=True)
    def _one_thread():
        yield from single_thread()

    @pytest.fixture(scope="module")
    def model(tmp_path_factory):
        return tiny_model(tmp_path_factory)

    @pytest.fixture(scope="module")
    def exported(model, tmp_path_factory):
        return tiny_export(model, tmp_path_factory)

    return _one_thread, model, exported
