"""The shape of the package: the ROS-free core stands alone.

* nothing under ``engine/`` imports the ROS package ``sam2_ros`` (or rclpy);
* the tracker and its memory bank import nothing from the ONNX exporter (``engine.export``);
* ``import engine.tracker`` loads neither onnx, onnxruntime, the exporter nor ROS.
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


@pytest.mark.parametrize("name", ["tracker.py", "memory_bank.py", "memory_layout.py",
                                  "prompts.py"])
def test_tracking_core_does_not_import_the_exporter(name):
    bad = [n for n in _imports(ENGINE / name) if n.startswith("engine.export")]
    assert not bad, f"engine/{name} imports {bad}"


def test_importing_the_tracker_loads_no_exporter_onnx_or_ros():
    code = ("import sys, engine.tracker; print(sorted(m for m in sys.modules if m.split('.')[0] "
            "in ('onnx', 'onnxruntime', 'rclpy', 'sam2_ros', 'tensorrt') "
            "or m.startswith('engine.export')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout
