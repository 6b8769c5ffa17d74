"""Launch sam2_node (a lifecycle node) with config/sam2.yaml on a ROS 2 install (Humble, Jazzy).

    ros2 launch sam2_ros sam2.launch.py camera:=/camera/color/image_raw
    ros2 launch sam2_ros sam2.launch.py camera:=/camera/color/image_raw \
        checkpoint:=$HOME/checkpoints/sam2.1_hiera_tiny.pt image_size:=1024 device:=cuda
    ros2 launch sam2_ros sam2.launch.py camera:=/camera/image_raw input_transport:=compressed
    ros2 launch sam2_ros sam2.launch.py camera:=/camera/color/image_raw \
        depth:=/camera/aligned_depth_to_color/image_raw      # + 3D positions (depth_enabled)

The node configures and activates itself (autostart:=true); with autostart:=false it waits for
a lifecycle manager (or `ros2 lifecycle set /sam2_node configure`). Arguments left empty keep
the value of params_file. The Fast DDS profile with a 32 MB shared-memory segment (large images
between processes) is loaded for the node unless use_shm_profile:=false; give the camera driver
the same FASTRTPS_DEFAULT_PROFILES_FILE for loss-free large images.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
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


def _node(context):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides = {name: kind(arg(name)) for name, (kind, _) in OVERRIDES.items() if arg(name)}
    overrides["autostart"] = arg("autostart").lower() in ("true", "1", "yes")
    camera, depth = arg("camera"), arg("depth")
    remappings = [("image", camera), ("image/compressed", f"{camera}/compressed")]
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
        DeclareLaunchArgument("use_shm_profile", default_value="true",
                              description="load config/fastdds_profile.xml (32 MB shared memory)"),
        DeclareLaunchArgument("log_level", default_value="info", description="node log level"),
    ] + [DeclareLaunchArgument(name, default_value="", description=f"{text} (empty: params_file)")
         for name, (_, text) in OVERRIDES.items()]
    profile = os.path.join(share, "config", "fastdds_profile.xml")
    shm = IfCondition(LaunchConfiguration("use_shm_profile"))
    return LaunchDescription(args + [
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", profile, condition=shm),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", profile, condition=shm),
        OpaqueFunction(function=_node),
    ])
