"""Lifecycle failures of sam2_node as a real process: a missing or wrong checkpoint, an invalid
parameter or an unavailable backend fails configure with the reason in the log; the node stays
alive and configures once the parameter is fixed.

Each test sets every parameter it depends on and leaves the shared node unconfigured, so the
tests pass in any order and alone; the start-up override case has a node of its own."""
from __future__ import annotations

import pytest

from ros_helpers import NodeProcess, RosHarness

VALID = {"image_size": 128, "checkpoint": "", "backend": "torch"}  # tiny, random weights
START = {"image_size": 128}  # the defaults otherwise (an empty string is no command-line value)


@pytest.fixture(scope="module")
def node():
    with NodeProcess(START) as proc:
        yield proc


@pytest.fixture(scope="module")
def ros(node):
    with RosHarness(node) as harness:
        harness.subscribe("diagnostics")
        yield harness


def _set(ros, **params) -> None:
    """Every parameter the tests touch, VALID unless given."""
    assert ros.state() == "unconfigured"
    results = ros.set_parameters(**{**VALID, **params})
    assert all(r.successful for r in results), [r.reason for r in results]


def _configure_fails_with(ros, node, reason: str) -> None:
    assert not ros.change_state("configure")
    assert ros.state() == "unconfigured"
    assert ros.wait_for(lambda: reason in node.log(), 5.0), node.log()[-2000:]
    assert node.alive()


def test_invalid_start_up_override_is_refused_then_fixed_and_shut_down():
    """A start-up override that is invalid keeps the default and fails configure with the
    reason (also on /diagnostics, published while unconfigured); once the parameter is set
    to a valid value the node configures, activates and shuts down cleanly."""
    params = {"image_size": 100, "checkpoint": "/nonexistent/sam2.1_hiera_tiny.pt"}
    with NodeProcess(params) as proc, RosHarness(proc) as ros:
        ros.subscribe("diagnostics")
        _configure_fails_with(
            ros, proc, "image_size=100 must be 0 (the model's own size) or a multiple of 32")
        values = ros.diagnostics(fresh=True)
        assert values["state"] == "unconfigured"
        assert "configure failed: invalid parameters: image_size=100" in values["last_error"]
        _set(ros)
        assert ros.change_state("configure") and ros.state() == "inactive"
        assert ros.change_state("activate") and ros.state() == "active"
        assert ros.change_state("shutdown") and ros.state() == "finalized"
        assert proc.alive()
        assert proc.stop() == 0


def test_configure_refuses_missing_checkpoint(ros, node):
    _set(ros, checkpoint="/nonexistent/sam2.1_hiera_tiny.pt")
    _configure_fails_with(ros, node, "checkpoint file not found: /nonexistent/sam2.1_hiera_tiny.pt")


def test_configure_refuses_corrupt_checkpoint(ros, node, tmp_path):
    bad = tmp_path / "sam2.1_hiera_tiny.pt"
    bad.write_bytes(b"not a torch file" * 64)
    _set(ros, checkpoint=str(bad))
    _configure_fails_with(ros, node, f"could not read checkpoint {bad}")


def test_configure_refuses_unavailable_backend(ros, node):
    _set(ros, backend="tensorrt")
    _configure_fails_with(ros, node, "could not start the tensorrt runtime: backend 'tensorrt' "
                                     "needs NVIDIA TensorRT")


def test_configure_succeeds_once_fixed(ros, node):
    _set(ros, checkpoint="/nonexistent/sam2.1_hiera_tiny.pt")
    _configure_fails_with(ros, node, "checkpoint file not found")
    _set(ros)
    assert ros.change_state("configure") and ros.state() == "inactive"
    assert ros.change_state("activate") and ros.state() == "active"
    values = ros.diagnostics(fresh=True)
    assert values["state"] == "active", values
    assert ros.change_state("deactivate") and ros.change_state("cleanup")
    assert ros.state() == "unconfigured" and node.alive()
