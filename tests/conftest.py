"""Shared test set-up: deterministic torch on CPU, the oracle importable as ``oracle``."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

torch.set_grad_enabled(False)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
