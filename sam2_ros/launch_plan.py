"""What ``launch/sam2.launch.py`` starts, as plain data: its arguments, and the node (parameters,
remappings, environment) a set of argument values gives.

Kept apart from the launch file so that it imports nothing from ``launch``/``launch_ros``: the
launch file only turns these tables into launch actions, and the logic (overrides and their
types, remappings beside the camera, the Fast DDS profile's rule) is tested as it is.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

PACKAGE = "sam2_ros"
EXECUTABLE = "sam2_node"
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
SHM_CHOICES = ("auto", "true", "false", "1", "0", "yes", "no")


@dataclass(frozen=True)
class Argument:
    name: str
    default: str
    description: str


# Launch arguments that override a parameter of params_file when given (non-empty).
OVERRIDES: dict[str, tuple[Callable[[str], Any], str]] = {
    "model": (str, "sam2_ros_compact (bundled, the default) or one of Meta's, e.g. "
                   "sam2.1_hiera_tiny"),
    "checkpoint": (str, "checkpoint file (.pt, Meta's format); default: the bundled weights"),
    "image_size": (int, "model input side (default: the model's own)"),
    "device": (str, "cpu, cuda or cuda:N"),
    "backend": (str, "torch | onnxruntime | tensorrt"),
    "input_transport": (str, "raw (image) or compressed (image/compressed)"),
}


def arguments(share: str) -> list[Argument]:
    """Every launch argument, with its default; ``share`` is the package's share directory."""
    return [
        Argument("camera", "image", "input image topic (compressed: <camera>/compressed)"),
        Argument("depth", "", "aligned depth image topic (16UC1/32FC1, the colour image's field "
                              "of view); given: depth_enabled, 3D positions"),
        Argument("depth_camera_info", "", "CameraInfo of the depth image (default: camera_info "
                                          "beside the depth topic)"),
        Argument("params_file", os.path.join(share, "config", "sam2.yaml"),
                 "parameter file of the node"),
        Argument("namespace", "", "node namespace"),
        Argument("node_name", EXECUTABLE, "node name"),
        Argument("autostart", "true", "configure and activate at start-up"),
        Argument("camera_info", "", "CameraInfo of the camera, republished beside ~/overlay "
                                    "(default: camera_info beside camera)"),
        Argument("detections", "detections", "vision_msgs/Detection2DArray of a detector: boxes "
                                              "become prompts (with vision_msgs installed)"),
        Argument("use_sim_time", "false", "use /clock (bag replay)"),
        Argument("use_shm_profile", "auto", "config/fastdds_profile.xml (32 MB shared memory) "
                                            "for the node only: auto (when no profile is set in "
                                            "the environment), true or false"),
        Argument("log_level", "info", "node log level"),
    ] + [Argument(name, "", f"{text} (empty: params_file)")
         for name, (_, text) in OVERRIDES.items()]


@dataclass(frozen=True)
class NodePlan:
    """The keyword arguments of the node's launch action."""
    name: str
    namespace: str
    parameters: list[Any]  # [params_file, {overrides}]
    remappings: list[tuple[str, str]]
    arguments: list[str]
    additional_env: dict[str, str] = field(default_factory=dict)


def _true(text: str) -> bool:
    return text.lower() in ("true", "1", "yes")


def beside(topic: str, name: str) -> str:
    """The topic ``name`` in the namespace of ``topic`` (image drivers' convention)."""
    return f"{topic.rsplit('/', 1)[0]}/{name}" if "/" in topic else name


def profile_env(choice: str, environment: Mapping[str, str], share: str) -> dict[str, str]:
    """The node's own environment additions: the shipped Fast DDS profile, when chosen
    (``auto``: only when ``environment`` names no profile of its own)."""
    choice = choice.lower()
    if choice not in SHM_CHOICES:
        raise ValueError(f"use_shm_profile must be auto, true or false, got {choice!r}")
    if choice == "auto" and any(environment.get(v) for v in PROFILE_VARIABLES):
        return {}  # the user's own profile stays in force
    if choice != "auto" and not _true(choice):
        return {}
    profile = os.path.join(share, "config", "fastdds_profile.xml")
    return {v: profile for v in PROFILE_VARIABLES}


def node_plan(values: Mapping[str, str], environment: Mapping[str, str],
              share: str) -> NodePlan:
    """The node that the launch argument ``values`` (every argument, as text) ask for.
    Raises ValueError for a value the launch cannot use (the message says which)."""
    unknown = set(values) - {a.name for a in arguments(share)}
    if unknown:
        raise ValueError(f"not launch arguments of {PACKAGE}: {sorted(unknown)}")
    overrides: dict[str, Any] = {}
    for name, (kind, _) in OVERRIDES.items():
        if values[name]:
            try:
                overrides[name] = kind(values[name])
            except ValueError:
                raise ValueError(f"{name}:={values[name]!r} is not a {kind.__name__}") from None
    overrides["autostart"] = _true(values["autostart"])
    if _true(values["use_sim_time"]):
        overrides["use_sim_time"] = True
    camera, depth = values["camera"], values["depth"]
    remappings = [("image", camera), ("image/compressed", f"{camera}/compressed"),
                  ("image_mouse_left", f"{camera}_mouse_left"),
                  ("camera_info", values["camera_info"] or beside(camera, "camera_info")),
                  ("detections", values["detections"])]
    if depth:  # aligned depth: its CameraInfo is, by the drivers' convention, beside it
        overrides["depth_enabled"] = True
        info = values["depth_camera_info"] or f"{depth.rsplit('/', 1)[0]}/camera_info"
        remappings += [("depth/image", depth), ("depth/camera_info", info)]
    return NodePlan(
        name=values["node_name"], namespace=values["namespace"],
        parameters=[values["params_file"], overrides], remappings=remappings,
        arguments=["--ros-args", "--log-level", values["log_level"]],
        additional_env=profile_env(values["use_shm_profile"], environment, share))
