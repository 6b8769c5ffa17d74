"""launch/sam2.launch.py without a ROS install: `launch` and `launch_ros` are not on PyPI, so
they are replaced by stand-ins with the real classes' names and keyword arguments. This checks
the file's own logic (arguments, overrides, remaps, files it points at), not ros2 launch."""
from __future__ import annotations

import re
import runpy
import sys
import types
from pathlib import Path

import pytest
import yaml

from sam2_ros.config import PARAMETERS

ROOT = Path(__file__).resolve().parents[1]


class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class DeclareLaunchArgument(_Recorded):
    def __init__(self, name, *, default_value=None, description=None, choices=None):
        super().__init__(name, default_value=default_value, description=description)
        self.name, self.default_value = name, default_value


class SetEnvironmentVariable(_Recorded):
    def __init__(self, name, value, *, condition=None):
        super().__init__(name, value, condition=condition)


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
                 emulate_tty=False, exec_name=None):
        super().__init__(name=name, namespace=namespace, package=package, executable=executable,
                         parameters=parameters, remappings=remappings, arguments=arguments)


@pytest.fixture
def launch_file(monkeypatch):
    fakes = {
        "launch": dict(LaunchDescription=lambda entities: list(entities)),
        "launch.actions": dict(DeclareLaunchArgument=DeclareLaunchArgument,
                               SetEnvironmentVariable=SetEnvironmentVariable,
                               OpaqueFunction=OpaqueFunction),
        "launch.conditions": dict(IfCondition=lambda expr: ("if", expr)),
        "launch.substitutions": dict(LaunchConfiguration=LaunchConfiguration),
        "launch_ros": {}, "launch_ros.actions": dict(LifecycleNode=LifecycleNode),
        "ament_index_python": {},
        "ament_index_python.packages": dict(get_package_share_directory=lambda pkg: str(ROOT)),
    }
    for name, attrs in fakes.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    return runpy.run_path(str(ROOT / "launch" / "sam2.launch.py"))


def _run(launch_file, **given):
    entities = launch_file["generate_launch_description"]()
    context = {e.name: e.default_value for e in entities if isinstance(e, DeclareLaunchArgument)}
    unknown = set(given) - set(context)
    assert not unknown, f"not launch arguments: {unknown}"
    context.update(given)
    (opaque,) = [e for e in entities if isinstance(e, OpaqueFunction)]
    (node,) = opaque.function(context)
    env = {e.args[0]: e.args[1] for e in entities if isinstance(e, SetEnvironmentVariable)}
    return node.kwargs, env


def test_defaults_start_the_node_with_the_yaml(launch_file):
    kw, env = _run(launch_file)
    assert (kw["package"], kw["executable"], kw["name"]) == ("sam2_ros", "sam2_node", "sam2_node")
    setup = (ROOT / "setup.py").read_text()
    assert re.search(r'"sam2_node = sam2_ros\.node:main"', setup), "no sam2_node console script"
    params_file, overrides = kw["parameters"]
    assert Path(params_file) == ROOT / "config" / "sam2.yaml"
    assert "ros__parameters" in yaml.safe_load(Path(params_file).read_text())["/**"]
    assert overrides == {"autostart": True}  # nothing else overrides the yaml
    assert kw["remappings"] == [("image", "image"), ("image/compressed", "image/compressed")]
    assert Path(env["FASTRTPS_DEFAULT_PROFILES_FILE"]).is_file()


def test_arguments_override_parameters_with_their_types(launch_file):
    kw, _ = _run(launch_file, camera="/camera/color/image_raw", image_size="1024",
                 checkpoint="/ckpt/sam2.1_hiera_tiny.pt", device="cuda", autostart="false")
    overrides = kw["parameters"][1]
    assert overrides == {"image_size": 1024, "checkpoint": "/ckpt/sam2.1_hiera_tiny.pt",
                         "device": "cuda", "autostart": False}
    assert set(overrides) <= set(PARAMETERS)
    assert ("image", "/camera/color/image_raw") in kw["remappings"]
    assert ("image/compressed", "/camera/color/image_raw/compressed") in kw["remappings"]


def test_depth_argument_enables_depth_and_remaps_it(launch_file):
    """depth:= turns depth_enabled on and remaps depth/image and (beside it, unless given)
    depth/camera_info."""
    kw, _ = _run(launch_file, depth="/camera/aligned_depth_to_color/image_raw")
    assert kw["parameters"][1] == {"autostart": True, "depth_enabled": True}
    assert ("depth/image", "/camera/aligned_depth_to_color/image_raw") in kw["remappings"]
    assert ("depth/camera_info", "/camera/aligned_depth_to_color/camera_info") in kw["remappings"]
    kw, _ = _run(launch_file, depth="/zed/depth/depth_registered",
                 depth_camera_info="/zed/rgb/camera_info")
    assert ("depth/camera_info", "/zed/rgb/camera_info") in kw["remappings"]
