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
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

from sam2_ros.launch_plan import EXECUTABLE, PACKAGE, arguments, node_plan

# Arguments, overrides and remappings live in sam2_ros/launch_plan.py (plain data, tested
# without a ROS install); this file only turns them into launch actions.


def _node(context):
    share = get_package_share_directory(PACKAGE)
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in arguments(share)}
    plan = node_plan(values, context.environment, share)
    return [LifecycleNode(
        package=PACKAGE, executable=EXECUTABLE, name=plan.name, namespace=plan.namespace,
        output="screen", emulate_tty=True, parameters=plan.parameters,
        remappings=plan.remappings, arguments=plan.arguments,
        additional_env=plan.additional_env,
    )]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
         for a in arguments(share)] + [OpaqueFunction(function=_node)])
