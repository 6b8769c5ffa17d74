"""sam2_ros: real-time SAM 2 segmentation and tracking as a ROS 2 node, installed with pip.

pip installs the Python packages into a virtual environment (setup_venv.sh does, next to the
messages it builds from sam2_ros_interfaces/ with CMake). On a ROS 2 install colcon builds the
repository through CMakeLists.txt instead (messages first, then these packages). `engine` is
the ROS-free core; `sam2_ros` is the ROS 2 glue.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "sam2_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["engine", "engine.*", "sam2_ros", "sam2_ros.*"]),
    # the bundled compact model (engine/weights), loaded from the installed package
    package_data={"engine": ["weights/*.pt", "weights/*.md"]},  # weights, not training logs
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
    ],
    python_requires=">=3.10",
    # torch: install the build for your machine first (a CPU or CUDA wheel); pip keeps it.
    install_requires=["numpy", "torch", "opencv-python-headless", "tqdm"],
    zip_safe=False,  # the bundled weights are memory-mapped from their file
    maintainer="sam2_ros maintainers",
    maintainer_email="sam2-ros@users.noreply.github.com",
    description="Real-time SAM 2 segmentation and tracking for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "sam2-engine = engine.cli:main",
            "sam2_node = sam2_ros.node:main",
            "sam2_demo = sam2_ros.demo:main",
        ],
    },
)
