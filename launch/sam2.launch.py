"""Launch sam2_node (a lifecycle node) with config/sam2.yaml on a ROS 2 install (Humble, Jazzy).

    ros2 launch sam2_ros sam2.launch.py camera:=/camera/color/image_raw
    ros2 launch sam2_ros sam2.launch.py camera:=/camera/color/image_raw \
        checkpoint:=$HOME/checkpoints/sam2.1_hiera_tiny.pt image_size:=1024 device:=cuda
    ros2 launch sam2_ros sam2.launch.py camera:=/camera/image_raw input_transport:=compressed
    ros2 launch sam2_ros sam2.launch.py camera:=/camera/color/image_raw \
        depth:=/camera/aligned_depth_to_color/image_raw      # + 3D positions (depth_enabled)

The node configures and activates itself (autostart:=true); with autostart:=false it waits for
a lifecycle manager (or `ros2 lifecycle set /sam2_node configure`). Arguments left empty keep
the value of params_file. use_sim_time:=true for bag replay.

Fast DDS profile (config/fastdds_profile.xml: a 32 MB shared-memory segment, for large images
between processes): set for the sam2_node process only, never for the rest of the launch.
use_shm_profile:=auto (default) sets it when the environment names no profile of its own
(FASTRTPS_DEFAULT_PROFILES_FILE / FASTDDS_DEFAULT_PROFILES_FILE), true sets it anyway, false
never. The camera driver needs the same profile for loss-free large images: start it with
FASTRTPS_DEFAULT_PROFILES_FILE=$(ros2 pkg prefix sam2_ros)/share/sam2_ros/config/fastdds_profile.xml
(FASTDDS_DEFAULT_PROFILES_FILE on Kilted), or give that variable to its Node in your launch file
(additional_env).

Topics remapped beside the camera: <camera>_mouse_left (rqt_image_view's clicks),
camera_info (default: camera_info beside the camera topic) and detections.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

PACKAGE = "sam2_ros"
# Launch arguments that override a parameter of params_file when given (non-empty).
OVERRIDES = {
    "model": (str, "sam2_ros_compact (bundled, the default) or one of Meta's, e.g. "
                   "sam2.1_hiera_tiny"),
    "checkpoint": (str, "checkpoint file (.pt, Meta's format); default: the bundled weights"),
    "image_size": (int, "model input side (default: the model's own)"),
    "device": (str, "cpu, cuda or cuda:N"),
    "backend": (str, "torch | onnxruntime | tensorrt"),
    "input_transport": (str, "raw (image) or compressed (image/compressed)"),
}


PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


def _true(text: str) -> bool:
    return text.lower() in ("true", "1", "yes")


def _beside(topic: str, name: str) -> str:
    """The topic ``name`` in the namespace of ``topic`` (image drivers' convention)."""
    return f"{topic.rsplit('/', 1)[0]}/{name}" if "/" in topic else name


def _profile_env(context, choice: str) -> dict[str, str]:
    """The node's own environment additions: the Fast DDS profile, when chosen."""
    choice = choice.lower()
    if choice not in ("auto", "true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"use_shm_profile must be auto, true or false, got {choice!r}")
    env = getattr(context, "environment", os.environ)
    if choice == "auto" and any(env.get(v) for v in PROFILE_VARIABLES):
        return {}  # the user's own profile stays in force
    if choice != "auto" and not _true(choice):
        return {}
    profile = os.path.join(get_package_share_directory(PACKAGE), "config",
                           "fastdds_profile.xml")
    return {v: profile for v in PROFILE_VARIABLES}


def _node(context):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides = {name: kind(arg(name)) for name, (kind, _) in OVERRIDES.items() if arg(name)}
    overrides["autostart"] = _true(arg("autostart"))
    if _true(arg("use_sim_time")):
        overrides["use_sim_time"] = True
    camera, depth = arg("camera"), arg("depth")
    remappings = [("image", camera), ("image/compressed", f"{camera}/compressed"),
                  ("image_mouse_left", f"{camera}_mouse_left"),
                  ("camera_info", arg("camera_info") or _beside(camera, "camera_info")),
                  ("detections", arg("detections"))]
    if depth:  # aligned depth: its CameraInfo is, by the drivers' convention, beside it
        overrides["depth_enabled"] = True
        info = arg("depth_camera_info") or f"{depth.rsplit('/', 1)[0]}/camera_info"
        remappings += [("depth/image", depth), ("depth/camera_info", info)]
    return [LifecycleNode(
        package=PACKAGE, executable="sam2_node", name=arg("node_name"),
        namespace=arg("namespace"), output="screen", emulate_tty=True,
        parameters=[arg("params_file"), overrides],
        remappings=remappings,
        arguments=["--ros-args", "--log-level", arg("log_level")],
        additional_env=_profile_env(context, arg("use_shm_profile")),
    )]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    args = [
        DeclareLaunchArgument("camera", default_value="image",
                              description="input image topic (compressed: <camera>/compressed)"),
        DeclareLaunchArgument("depth", default_value="",
                              description="aligned depth image topic (16UC1/32FC1, the colour "
                                          "image's field of view); given: depth_enabled, 3D "
                                          "positions"),
        DeclareLaunchArgument("depth_camera_info", default_value="",
                              description="CameraInfo of the depth image (default: camera_info "
                                          "beside the depth topic)"),
        DeclareLaunchArgument("params_file",
                              default_value=os.path.join(share, "config", "sam2.yaml"),
                              description="parameter file of the node"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("node_name", default_value="sam2_node", description="node name"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate at start-up"),
        DeclareLaunchArgument("camera_info", default_value="",
                              description="CameraInfo of the camera, republished beside "
                                          "~/overlay (default: camera_info beside camera)"),
        DeclareLaunchArgument("detections", default_value="detections",
                              description="vision_msgs/Detection2DArray of a detector: boxes "
                                          "become prompts (with vision_msgs installed)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (bag replay)"),
        DeclareLaunchArgument("use_shm_profile", default_value="auto",
                              description="config/fastdds_profile.xml (32 MB shared memory) for "
                                          "the node only: auto (when no profile is set in the "
                                          "environment), true or false"),
        DeclareLaunchArgument("log_level", default_value="info", description="node log level"),
    ] + [DeclareLaunchArgument(name, default_value="", description=f"{text} (empty: params_file)")
         for name, (_, text) in OVERRIDES.items()]
    return LaunchDescription(args + [OpaqueFunction(function=_node)])
