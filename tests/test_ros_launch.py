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


def _run(launch_file, environment=None, **given):
    """The node the launch file starts with these arguments: its keyword arguments and the
    environment variables it adds for the node alone (every other entity is an argument)."""
    entities = launch_file["generate_launch_description"]()
    assert all(isinstance(e, (DeclareLaunchArgument, OpaqueFunction)) for e in entities), \
        "the launch file sets something beyond the node (e.g. the environment of the launch)"
    context = {e.name: e.default_value for e in entities if isinstance(e, DeclareLaunchArgument)}
    unknown = set(given) - set(context)
    assert not unknown, f"not launch arguments: {unknown}"
    context.update(given)
    (opaque,) = [e for e in entities if isinstance(e, OpaqueFunction)]
    (node,) = opaque.function(_Context(context, environment or {}))
    return node.kwargs, node.kwargs["additional_env"]


def test_defaults_start_the_node_with_the_yaml(launch_file):
    kw, env = _run(launch_file)
    assert (kw["package"], kw["executable"], kw["name"]) == ("sam2_ros", "sam2_node", "sam2_node")
    setup = (ROOT / "setup.py").read_text()
    assert re.search(r'"sam2_node = sam2_ros\.node:main"', setup), "no sam2_node console script"
    params_file, overrides = kw["parameters"]
    assert Path(params_file) == ROOT / "config" / "sam2.yaml"
    assert "ros__parameters" in yaml.safe_load(Path(params_file).read_text())["/**"]
    assert overrides == {"autostart": True}  # nothing else overrides the yaml
    assert kw["remappings"] == [("image", "image"), ("image/compressed", "image/compressed"),
                                ("image_mouse_left", "image_mouse_left"),
                                ("camera_info", "camera_info"), ("detections", "detections")]
    # no profile in the environment: the node (only) gets the large-image profile
    assert set(env) == {"FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"}
    assert Path(env["FASTRTPS_DEFAULT_PROFILES_FILE"]).is_file()
    assert "<segment_size>33554432</segment_size>" in Path(
        env["FASTRTPS_DEFAULT_PROFILES_FILE"]).read_text()


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


def test_fast_dds_profile_is_the_nodes_and_yields_to_the_users(launch_file):
    """use_shm_profile: auto leaves a profile set in the environment in force; true sets the
    shipped one for the node anyway; false never. Nothing is set for the launch as a whole."""
    mine = {"FASTRTPS_DEFAULT_PROFILES_FILE": "/home/me/my_profile.xml"}
    _, env = _run(launch_file, environment=mine)
    assert env == {}
    _, env = _run(launch_file, environment={"FASTDDS_DEFAULT_PROFILES_FILE": "/x.xml"})
    assert env == {}
    _, env = _run(launch_file, environment=mine, use_shm_profile="true")
    assert env["FASTRTPS_DEFAULT_PROFILES_FILE"].endswith("config/fastdds_profile.xml")
    _, env = _run(launch_file, use_shm_profile="false")
    assert env == {}
    with pytest.raises(ValueError, match="auto, true or false"):
        _run(launch_file, use_shm_profile="maybe")


def test_sim_time_clicks_camera_info_and_detections(launch_file):
    kw, _ = _run(launch_file, camera="/cam/color/image_raw", use_sim_time="true",
                 detections="/yolo/detections")
    assert kw["parameters"][1] == {"autostart": True, "use_sim_time": True}
    remaps = dict(kw["remappings"])
    assert remaps["image_mouse_left"] == "/cam/color/image_raw_mouse_left"  # rqt_image_view
    assert remaps["camera_info"] == "/cam/color/camera_info"
    assert remaps["detections"] == "/yolo/detections"
    kw, _ = _run(launch_file, camera="/cam/color/image_raw", camera_info="/cam/info")
    assert dict(kw["remappings"])["camera_info"] == "/cam/info"
    assert "use_sim_time" not in kw["parameters"][1]
