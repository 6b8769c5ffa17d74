"""Lifecycle failures of sam2_node as a real process: a missing or wrong checkpoint, an invalid
parameter or an unavailable backend fails configure with the reason in the log; the node stays
alive and configures once the parameter is fixed."""
from __future__ import annotations

import pytest

from ros_helpers import NodeProcess, RosHarness


@pytest.fixture(scope="module")
def node():
    # Invalid from the start: configure must refuse it and say why.
    params = {"image_size": 100, "checkpoint": "/nonexistent/sam2.1_hiera_tiny.pt"}
    with NodeProcess(params) as proc:
        yield proc


@pytest.fixture(scope="module")
def ros(node):
    with RosHarness(node) as harness:
        harness.subscribe("diagnostics")
        yield harness


def _configure_fails_with(ros, node, reason: str) -> None:
    assert not ros.change_state("configure")
    assert ros.state() == "unconfigured"
    assert ros.wait_for(lambda: reason in node.log(), 5.0), node.log()[-2000:]
    assert node.alive()


def test_configure_refuses_invalid_parameter_override(ros, node):
    _configure_fails_with(ros, node,
                          "image_size=100 must be 0 (the model's own size) or a multiple of 32")


def test_diagnostics_say_unconfigured_and_why(ros):
    """/diagnostics is published before any configure succeeds: the state and the reason."""
    values = ros.diagnostics(fresh=True)
    assert values["state"] == "unconfigured"
    assert "configure failed: invalid parameters: image_size=100" in values["last_error"]


def test_configure_refuses_missing_checkpoint(ros, node):
    assert ros.set_parameters(image_size=128)[0].successful
    _configure_fails_with(ros, node, "checkpoint file not found: /nonexistent/sam2.1_hiera_tiny.pt")


def test_configure_refuses_corrupt_checkpoint(ros, node, tmp_path):
    bad = tmp_path / "sam2.1_hiera_tiny.pt"
    bad.write_bytes(b"not a torch file" * 64)
    assert ros.set_parameters(checkpoint=str(bad))[0].successful
    _configure_fails_with(ros, node, f"could not read checkpoint {bad}")


def test_configure_refuses_unavailable_backend(ros, node):
    assert ros.set_parameters(checkpoint="", backend="tensorrt")[0].successful
    _configure_fails_with(ros, node, "could not start the tensorrt runtime: backend 'tensorrt' "
                                     "needs NVIDIA TensorRT")


def test_configure_succeeds_once_fixed_and_shuts_down(ros, node):
    assert ros.set_parameters(backend="torch")[0].successful
    assert ros.change_state("configure") and ros.state() == "inactive"
    assert ros.change_state("activate") and ros.state() == "active"
    assert ros.change_state("shutdown") and ros.state() == "finalized"
    assert node.alive()
    assert node.stop() == 0
