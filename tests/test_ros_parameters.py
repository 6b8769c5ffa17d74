"""sam2_node's parameters as rqt_reconfigure and `ros2 param` see them: typed (no dynamic
typing), ranges and constraints in their descriptors; a bad start-up value is not taken (the
default stays, configure fails saying why) while an integer given for a float is its float; a
parameter that applies at configure is refused while configured, so `ros2 param get` always
shows what is in effect."""
from __future__ import annotations

import pytest

from ros_helpers import RosHarness, node_process_fixtures
from sam2_ros.config import LIVE_PARAMETERS, PARAMETERS

PARAMS = {"num_threads": 1, "presence_threshold": 2.0, "overlay_alpha": 1, "image_size": 100}
node, _node_alive = node_process_fixtures(PARAMS)


@pytest.fixture(scope="module")
def ros(node):
    with RosHarness(node) as harness:
        yield harness


def _get(ros, *names):
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    resp = ros.call(GetParameters, "get_parameters", GetParameters.Request(names=list(names)))
    return [parameter_value_to_python(v) for v in resp.values]


def test_descriptors_have_types_ranges_and_constraints(ros):
    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import DescribeParameters

    names = list(PARAMETERS)
    resp = ros.call(DescribeParameters, "describe_parameters",
                    DescribeParameters.Request(names=names))
    d = {x.name: x for x in resp.descriptors}
    assert set(d) == set(names)
    assert not any(x.dynamic_typing for x in d.values())
    assert d["presence_threshold"].type == ParameterType.PARAMETER_DOUBLE
    (r,) = d["presence_threshold"].floating_point_range
    assert (r.from_value, r.to_value) == (0.0, 1.0)
    (r,) = d["max_objects"].integer_range
    assert (r.from_value, r.to_value) == (1, 65535)
    assert "multiple of 32" in d["image_size"].additional_constraints
    assert "raw, compressed" in d["input_transport"].additional_constraints
    for name in names:
        applies = "applies at once" if name in LIVE_PARAMETERS else "applies at configure"
        assert applies in d[name].additional_constraints, name


def test_bad_start_up_values_keep_the_default_and_fail_configure(ros, node):
    assert _get(ros, "presence_threshold", "overlay_alpha", "image_size") == [0.5, 1.0, 0]
    assert not ros.change_state("configure")
    ros.spin_for(0.5)
    log = node.log()
    assert "presence_threshold=2.0 must be a number in [0.0, 1.0]" in log, log[-2000:]
    assert "image_size=100 must be 0 (the model's own size) or a multiple of 32" in log
    assert "overlay_alpha" not in log.split("configure failed")[-1]  # 1 was taken as 1.0
    results = ros.set_parameters(presence_threshold=0.6, image_size=0)
    assert all(r.successful for r in results), [r.reason for r in results]
    assert ros.change_state("configure") and ros.change_state("activate")


def test_while_configured_param_get_shows_what_is_in_effect(ros):
    (res,) = ros.set_parameters(max_objects=5)
    assert not res.successful and "only apply at configure" in res.reason
    assert _get(ros, "max_objects") == [PARAMETERS["max_objects"].default]
    (res,) = ros.set_parameters(presence_threshold=0.7)  # live: applies at once
    assert res.successful and _get(ros, "presence_threshold") == [0.7]
    assert ros.change_state("deactivate") and ros.change_state("cleanup")
    (res,) = ros.set_parameters(max_objects=5)
    assert res.successful and _get(ros, "max_objects") == [5]
