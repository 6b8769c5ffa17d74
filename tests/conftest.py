"""Shared test set-up: deterministic torch on CPU, the oracle importable as ``oracle``."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

torch.set_grad_enabled(False)
# Tests of bf16 test bf16 itself, not this machine's probe of whether it pays off (a loaded
# machine can measure it slower); tests/test_torch_fast.py tests the probe.
os.environ.setdefault("SAM2_ROS_CPU_BF16", "on")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
