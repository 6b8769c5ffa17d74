"""launch/sam2.launch.py and what it starts (sam2_ros/launch_plan.py).

The plan (arguments, overrides and their types, remappings, the Fast DDS profile's rule) is
plain Python and is tested as it is. `launch` and `launch_ros` are not on PyPI, so the launch
file itself, a thin adapter from the plan to launch actions, is run against stand-ins with the
real classes' names and keyword arguments (Jazzy's `DeclareLaunchArgument`, `OpaqueFunction`,
`LaunchConfiguration.perform`, `launch_ros.actions.LifecycleNode`): that checks the adapter
passes the plan through unchanged, not ros2 launch itself."""
from __future__ import annotations

import re
import runpy
import sys
import types
from pathlib import Path

import pytest
import yaml

from sam2_ros.config import PARAMETERS
from sam2_ros.launch_plan import OVERRIDES, arguments, node_plan

ROOT = Path(__file__).resolve().parents[1]
SHARE = str(ROOT)  # an installed package's share directory has the same config/ and launch/


def _plan(environment=None, **given):
    """The node the launch starts with these arguments (the others at their defaults)."""
    values = {a.name: a.default for a in arguments(SHARE)}
    values.update(given)
    return node_plan(values, environment or {}, SHARE)


class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class DeclareLaunchArgument(_Recorded):
    def __init__(self, name, *, default_value=None, description=None, choices=None):
        super().__init__(name, default_value=default_value, description=description)
        self.name, self.default_value = name, default_value


class OpaqueFunction(_Recorded):
    def __init__(self, *, function, args=None, kwargs=None):
        super().__init__(function=function)
        self.function = function


class LaunchConfiguration:
    def __init__(self, name, *, default=None):
        self.name = name

    def perform(self, context):
        return context[self.name]


class LifecycleNode(_Recorded):
    def __init__(self, *, name, namespace, package=None, executable=None, parameters=None,
                 remappings=None, arguments=None, ros_arguments=None, output="log",
                 emulate_tty=False, exec_name=None, additional_env=None):
        super().__init__(name=name, namespace=namespace, package=package, executable=executable,
                         parameters=parameters, remappings=remappings, arguments=arguments,
                         additional_env=additional_env)


@pytest.fixture
def launch_file(monkeypatch):
    fakes = {
        "launch": dict(LaunchDescription=lambda entities: list(entities)),
        "launch.actions": dict(DeclareLaunchArgument=DeclareLaunchArgument,
                               OpaqueFunction=OpaqueFunction),
        "launch.substitutions": dict(LaunchConfiguration=LaunchConfiguration),
        "launch_ros": {}, "launch_ros.actions": dict(LifecycleNode=LifecycleNode),
        "ament_index_python": {},
        "ament_index_python.packages": dict(get_package_share_directory=lambda pkg: str(ROOT)),
    }
    for name, attrs in fakes.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    return runpy.run_path(str(ROOT / "launch" / "sam2.launch.py"))


class _Context(dict):
    """The launch context: launch arguments by name, and the launch's environment."""

    def __init__(self, values, environment):
        super().__init__(values)
        self.environment = environment


def test_launch_file_declares_the_plans_arguments_and_starts_its_node(launch_file):
    """The adapter: every argument of the plan declared with its default and description,
    nothing else in the launch (e.g. no environment set for the launch as a whole), and the
    node action given exactly the plan's fields."""
    entities = launch_file["generate_launch_description"]()
    declared = [e for e in entities if isinstance(e, DeclareLaunchArgument)]
    assert [(e.name, e.default_value, e.kwargs["description"]) for e in declared] == \
        [(a.name, a.default, a.description) for a in arguments(SHARE)]
    (opaque,) = [e for e in entities if isinstance(e, OpaqueFunction)]
    assert len(entities) == len(declared) + 1, "the launch file sets something beyond the node"
    given = dict(camera="/cam/color/image_raw", depth="/cam/depth/image_raw", image_size="512",
                 use_sim_time="true", node_name="tracker", namespace="robot1")
    values = {e.name: e.default_value for e in declared} | given
    environment = {"FASTDDS_DEFAULT_PROFILES_FILE": "/x.xml"}
    (node,) = opaque.function(_Context(values, environment))
    plan = _plan(environment, **given)
    assert node.kwargs == dict(package="sam2_ros", executable="sam2_node", name=plan.name,
                               namespace=plan.namespace, parameters=plan.parameters,
                               remappings=plan.remappings, arguments=plan.arguments,
                               additional_env=plan.additional_env)
    assert (plan.name, plan.namespace) == ("tracker", "robot1")


def test_defaults_start_the_node_with_the_yaml():
    plan = _plan()
    setup = (ROOT / "setup.py").read_text()
    assert re.search(r'"sam2_node = sam2_ros\.node:main"', setup), "no sam2_node console script"
    assert plan.name == "sam2_node" and plan.arguments == ["--ros-args", "--log-level", "info"]
    params_file, overrides = plan.parameters
    assert Path(params_file) == ROOT / "config" / "sam2.yaml"
    assert "ros__parameters" in yaml.safe_load(Path(params_file).read_text())["/**"]
    assert overrides == {"autostart": True}  # nothing else overrides the yaml
    assert plan.remappings == [("image", "image"), ("image/compressed", "image/compressed"),
                               ("image_mouse_left", "image_mouse_left"),
                               ("camera_info", "camera_info"), ("detections", "detections")]
    # no profile in the environment: the node (only) gets the large-image profile
    env = plan.additional_env
    assert set(env) == {"FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"}
    assert Path(env["FASTRTPS_DEFAULT_PROFILES_FILE"]).is_file()
    assert "<segment_size>33554432</segment_size>" in Path(
        env["FASTRTPS_DEFAULT_PROFILES_FILE"]).read_text()


def test_arguments_override_parameters_with_their_types():
    plan = _plan(camera="/camera/color/image_raw", image_size="1024",
                 checkpoint="/ckpt/sam2.1_hiera_tiny.pt", device="cuda", autostart="false")
    overrides = plan.parameters[1]
    assert overrides == {"image_size": 1024, "checkpoint": "/ckpt/sam2.1_hiera_tiny.pt",
                         "device": "cuda", "autostart": False}
    # every override names a parameter of the node (use_sim_time is ROS's own)
    assert set(OVERRIDES) | {"autostart", "depth_enabled"} <= set(PARAMETERS)
    assert ("image", "/camera/color/image_raw") in plan.remappings
    assert ("image/compressed", "/camera/color/image_raw/compressed") in plan.remappings


def test_bad_argument_values_are_refused_with_the_argument_named():
    with pytest.raises(ValueError, match=r"image_size:='big' is not a int"):
        _plan(image_size="big")
    with pytest.raises(ValueError, match="not launch arguments.*cameras"):
        _plan(cameras="/cam")
    with pytest.raises(ValueError, match="auto, true or false"):
        _plan(use_shm_profile="maybe")


def test_depth_argument_enables_depth_and_remaps_it():
    """depth:= turns depth_enabled on and remaps depth/image and (beside it, unless given)
    depth/camera_info."""
    plan = _plan(depth="/camera/aligned_depth_to_color/image_raw")
    assert plan.parameters[1] == {"autostart": True, "depth_enabled": True}
    assert ("depth/image", "/camera/aligned_depth_to_color/image_raw") in plan.remappings
    assert ("depth/camera_info", "/camera/aligned_depth_to_color/camera_info") in plan.remappings
    plan = _plan(depth="/zed/depth/depth_registered", depth_camera_info="/zed/rgb/camera_info")
    assert ("depth/camera_info", "/zed/rgb/camera_info") in plan.remappings


def test_fast_dds_profile_is_the_nodes_and_yields_to_the_users():
    """use_shm_profile: auto leaves a profile set in the environment in force; true sets the
    shipped one for the node anyway; false never."""
    mine = {"FASTRTPS_DEFAULT_PROFILES_FILE": "/home/me/my_profile.xml"}
    assert _plan(environment=mine).additional_env == {}
    assert _plan(environment={"FASTDDS_DEFAULT_PROFILES_FILE": "/x.xml"}).additional_env == {}
    env = _plan(environment=mine, use_shm_profile="true").additional_env
    assert env["FASTRTPS_DEFAULT_PROFILES_FILE"].endswith("config/fastdds_profile.xml")
    assert _plan(use_shm_profile="false").additional_env == {}


def test_sim_time_clicks_camera_info_and_detections():
    plan = _plan(camera="/cam/color/image_raw", use_sim_time="true",
                 detections="/yolo/detections")
    assert plan.parameters[1] == {"autostart": True, "use_sim_time": True}
    remaps = dict(plan.remappings)
    assert remaps["image_mouse_left"] == "/cam/color/image_raw_mouse_left"  # rqt_image_view
    assert remaps["camera_info"] == "/cam/color/camera_info"
    assert remaps["detections"] == "/yolo/detections"
    plan = _plan(camera="/cam/color/image_raw", camera_info="/cam/info")
    assert dict(plan.remappings)["camera_info"] == "/cam/info"
    assert "use_sim_time" not in plan.parameters[1]
