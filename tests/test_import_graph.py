"""The shape of the package: the ROS-free core stands alone.

* nothing under ``engine/`` imports the ROS package ``sam2_ros`` (or rclpy);
* the tracker, its memory bank and every runtime (``engine/runtime/``) import nothing from the
  ONNX exporter (``engine.export``), not even inside a function; the modules both share (the
  graph signatures and cache layout, ``engine/graph_spec.py``, ``engine/graph_cache.py``)
  import neither; the exporter imports no runtime;
* ``import engine.tracker`` loads neither onnx, onnxruntime, the exporter nor ROS, and loading
  every runtime module loads no exporter module.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"


def _imports(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    return names


def _engine_files() -> list[Path]:
    return sorted(p for p in ENGINE.rglob("*.py") if "__pycache__" not in p.parts)


def test_imports_are_resolved():
    """The checker itself: a relative import in the engine resolves to an engine module."""
    names = _imports(ENGINE / "tracker.py")
    assert "engine.memory_bank" in names and "engine.runtime" in names


@pytest.mark.parametrize("path", _engine_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_engine_does_not_import_ros(path):
    bad = [n for n in _imports(path) if n.split(".")[0] in ("sam2_ros", "rclpy")]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: engine/ must stay ROS-free"


@pytest.mark.parametrize("name", ["tracker.py", "tracking_step.py", "memory_bank.py",
                                  "memory_layout.py", "prompts.py"])
def test_tracking_core_does_not_import_the_exporter(name):
    bad = [n for n in _imports(ENGINE / name) if n.startswith("engine.export")]
    assert not bad, f"engine/{name} imports {bad}"


def _runtime_files() -> list[Path]:
    return sorted((ENGINE / "runtime").glob("*.py"))


@pytest.mark.parametrize("path", _runtime_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_runtimes_do_not_import_the_exporter(path):
    bad = [n for n in _imports(path) if n.startswith("engine.export")]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: runtimes run exported graphs " \
                    "through engine/graph_spec.py and engine/graph_cache.py only"


@pytest.mark.parametrize("name", ["base.py", "onnx_runtime.py", "tensorrt_runtime.py",
                                  "tensorrt_build.py"])
def test_graph_runtimes_do_not_use_the_torch_model(name):
    """The graph runtimes run graphs or engines and a copy of the glue (TrackingGlue): they
    have no use for SAM2Model (tests/test_gpu_path_on_cpu.py checks one holds no reference)."""
    bad = [n for n in _imports(ENGINE / "runtime" / name) if n.endswith(".SAM2Model")]
    assert not bad, f"engine/runtime/{name} imports {bad}"


@pytest.mark.parametrize("name", ["graph_spec.py", "graph_cache.py"])
def test_shared_graph_modules_import_neither_side(name):
    bad = [n for n in _imports(ENGINE / name)
           if n.startswith(("engine.export", "engine.runtime"))]
    assert not bad, f"engine/{name} imports {bad}"


@pytest.mark.parametrize("path", sorted((ENGINE / "export").glob("*.py")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_exporter_imports_no_runtime(path):
    bad = [n for n in _imports(path) if n.startswith("engine.runtime")]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_checker_sees_imports_inside_functions():
    """A lazy import in a function body counts as much as one at the top of the file: the
    runtime factory (where exporter and runtimes meet) imports the exporter inside functions."""
    assert "engine.export.export_model" in _imports(ENGINE / "runtime_factory.py")


def test_loading_every_runtime_loads_no_exporter():
    code = ("import sys, engine.runtime.onnx_runtime, engine.runtime.tensorrt_runtime, "
            "engine.runtime.tensorrt_build, engine.runtime.precision_check, "
            "engine.runtime.memory_estimate; "
            "print(sorted(m for m in sys.modules if m.startswith('engine.export') "
            "or m.split('.')[0] == 'onnx'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_importing_the_tracker_loads_no_exporter_onnx_or_ros():
    code = ("import sys, engine.tracker; print(sorted(m for m in sys.modules if m.split('.')[0] "
            "in ('onnx', 'onnxruntime', 'rclpy', 'sam2_ros', 'tensorrt') "
            "or m.startswith('engine.export')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# Imported by the product only where the user picks what needs them (a backend, the exporter,
# ROS message packages that a ROS install provides): each import sits in a function or a guarded
# block, and the node or the CLI says what to install when it is missing.
OPTIONAL = {"onnx", "onnxruntime", "tensorrt", "vision_msgs"}
ROS = {"rclpy", "sensor_msgs", "std_msgs", "std_srvs", "geometry_msgs", "diagnostic_msgs",
       "visualization_msgs", "lifecycle_msgs", "builtin_interfaces", "rcl_interfaces",
       "sam2_ros_interfaces"}
# pip names of the import names that differ
PIP_NAMES = {"cv2": "opencv-python-headless"}


def test_every_third_party_import_of_the_product_is_an_install_requirement():
    """What ``pip install .`` brings must be enough for every module a robot or a user's
    command runs: engine/ (tools and benchmarks aside) and sam2_ros/. Optional backends and
    ROS's own packages are named above."""
    import re

    requires = re.search(r"install_requires=\[([^\]]*)\]", (ROOT / "setup.py").read_text())
    declared = set(re.findall(r'"([^"]+)"', requires.group(1)))
    product = [p for p in _engine_files() if not {"tools", "benchmarks"} & set(p.parts)]
    product += sorted((ROOT / "sam2_ros").rglob("*.py"))
    missing = {}
    for path in product:
        for name in _imports(path):
            top = name.split(".")[0]
            if (not top or top in sys.stdlib_module_names or top in ("engine", "sam2_ros")
                    or top in OPTIONAL or top in ROS):
                continue
            if PIP_NAMES.get(top, top) not in declared:
                missing.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    assert not missing, f"imported but not in setup.py's install_requires: {missing}"
