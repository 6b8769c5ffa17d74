"""The repository built as a ROS user builds it: a copy in a scratch workspace's ``src/``, a
plain ``colcon build`` (and ``--symlink-install``) against the ROS 2 install of this virtual
environment (pip wheels), ``source install/setup.bash``, and ``sam2_node`` started from
``install/`` answers a prompt and publishes tracks.

colcon comes from setup_venv.sh (pinned). What this cannot show: a build against a ROS 2
install from Debian packages (rosdep, launch, ros2 CLI), which this machine does not have.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ros_helpers import NodeProcess, RosHarness

ROOT = Path(__file__).resolve().parents[1]
COLCON = Path(sys.executable).with_name("colcon")
# Not part of a checkout: the environment, build outputs, caches.
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "install", "log", "artifacts",
                              "__pycache__", "*.egg-info", ".pytest_cache", "*.onnx",
                              "*.engine")

pytestmark = pytest.mark.skipif(not COLCON.is_file(),
                                reason="colcon is not installed (./setup_venv.sh installs it)")


def _ros_install_env() -> dict[str, str]:
    """The environment of a shell on this machine's ROS 2 install (the venv's wheels)."""
    prefix = sys.prefix
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AMENT_", "COLCON_", "CMAKE_PREFIX", "PYTHONPATH"))}
    env.update(VIRTUAL_ENV=prefix, PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
               AMENT_PREFIX_PATH=prefix, CMAKE_PREFIX_PATH=prefix)
    return env


def _build(workspace: Path, *options: str) -> Path:
    """``colcon build`` in ``workspace`` (holding a copy of this repository); its install/."""
    src = workspace / "src" / "sam2_ros"
    if not src.exists():
        shutil.copytree(ROOT, src, ignore=SKIP)
    listed = subprocess.run([str(COLCON), "list", "--names-only"], cwd=workspace,
                            env=_ros_install_env(), capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["sam2_ros"], listed.stdout
    done = subprocess.run(
        [str(COLCON), "build", *options, "--event-handlers", "console_direct-",
         "--cmake-args", "-DBUILD_TESTING=OFF"],
        cwd=workspace, env=_ros_install_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"colcon build {' '.join(options)} failed:\n" \
        f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n" + \
        "\n".join(p.read_text()[-3000:] for p in workspace.glob("log/latest_build/*/stdout*"))
    return workspace / "install"


def _sourced(install: Path, command: str) -> list[str]:
    """``command`` in bash after ``source install/setup.bash``."""
    return ["bash", "-c", f"source {shlex.quote(str(install / 'setup.bash'))} && {command}"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("colcon_ws")


def test_colcon_build_installs_node_and_interfaces(workspace):
    """One package to colcon (the interfaces are built from its CMakeLists.txt, first); after
    sourcing install/setup.bash, messages, node code and weights come from install/."""
    install = _build(workspace)
    prefix = install / "sam2_ros"
    assert (prefix / "lib" / "sam2_ros" / "sam2_node").is_file()
    assert (prefix / "share" / "sam2_ros" / "launch" / "sam2.launch.py").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "rosidl_interfaces" /
            "sam2_ros_interfaces").is_file()
    probe = ("import sam2_ros_interfaces.msg as m, sam2_ros.node as n, engine.checkpoint as c;"
             "import sam2_ros.launch_plan as lp;"  # what launch/sam2.launch.py imports
             "print(m.__file__); print(n.__file__); print(lp.__file__);"
             "print(c.bundled_checkpoint('sam2_ros_compact'))")
    out = subprocess.run(_sourced(install, f"python -c {shlex.quote(probe)}"), cwd=workspace,
                         env=_ros_install_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for line in out.stdout.split():
        assert Path(line).resolve().is_relative_to(prefix.resolve()), out.stdout


def test_node_from_install_tracks(workspace):
    """sam2_node, started from install/ after sourcing setup.bash, takes a prompt by service
    and publishes its track; the process has loaded the messages built into install/."""
    install = workspace / "install"
    if not (install / "setup.bash").is_file():
        install = _build(workspace)
    node_exe = install / "sam2_ros" / "lib" / "sam2_ros" / "sam2_node"
    params = {"autostart": True, "num_threads": 1}

    def command(args: list[str]) -> list[str]:
        return _sourced(install, " ".join(shlex.quote(a) for a in [str(node_exe), *args]))

    rgb = np.zeros((96, 128, 3), np.uint8)
    rgb[30:60, 40:80] = (220, 40, 40)
    with NodeProcess(params, command=command, cwd=workspace) as node, RosHarness(node) as ros:
        ros.subscribe("tracks")
        assert ros.wait_subscribers(60), "node not subscribed:\n" + node.log()[-3000:]
        stamp, _ = ros.track_frame(rgb, tries=5, timeout=10)
        resp = ros.add_prompt(7, points=[(60, 45)], labels=[1], stamp_ns=stamp)
        assert resp.success, resp.message
        _, tracks = ros.track_frame(rgb)
        assert [o.object_id for o in tracks.objects] == [7]
        maps = Path(f"/proc/{node.proc.pid}/maps").read_text()
        assert str((install / "sam2_ros" / "lib").resolve()) in maps, \
            "the node did not load the interfaces built into install/"


def test_symlink_install_links_the_sources(tmp_path):
    """``colcon build --symlink-install``: the installed Python files are links to the
    workspace's sources (edits apply without a rebuild) and everything imports."""
    install = _build(tmp_path, "--symlink-install")
    site = install / "sam2_ros" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" \
        / "site-packages"
    node_py = site / "sam2_ros" / "node.py"
    assert node_py.is_symlink()
    assert node_py.resolve() == (tmp_path / "src" / "sam2_ros" / "sam2_ros" / "node.py").resolve()
    probe = "import sam2_ros_interfaces.msg, sam2_ros.node, engine.tracker; print('ok')"
    out = subprocess.run(_sourced(install, f"python -c {shlex.quote(probe)}"), cwd=tmp_path,
                         env=_ros_install_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert os.access(install / "sam2_ros" / "lib" / "sam2_ros" / "sam2_node", os.X_OK)
