"""Build the folder the GPU check carries to a machine where nothing can be installed.

    python -m engine.benchmarks.gpu_bundle [--dest .gpu_bundle]       # make gpu-bundle

The GPU machine has Python 3.12, torch, numpy, onnx and onnxruntime; Meta's predictor (the
speed reference of ``engine.benchmarks.gpu``) also needs its own Python files and hydra-core,
omegaconf, antlr4, iopath and their pure-Python needs. This puts them in one folder, which
``python -m engine.benchmarks.gpu`` appends to ``sys.path``:

* the pure-Python packages (``PURE``), installed with ``pip install --no-deps --target``;
* PyYAML and Pillow (``BINARY``) as CPython 3.12 manylinux x86-64 wheels, unpacked (the GPU
  machine's Python is 3.12, whatever this machine runs);
* ``sam2/`` from Meta's source distribution (``SAM2``), its CUDA sources left out (the
  predictor runs without its extension; it only skips filling small mask holes).

Everything comes from the package registry pip is configured with; the folder stays under
``MAX_MIB`` (checked) and is ignored by git. ``MANIFEST.txt`` in it lists what it holds.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DEST = ROOT / ".gpu_bundle"
MAX_MIB = 60
SAM2 = "sam2==1.1.0"
PURE = ("hydra-core==1.3.8", "omegaconf==2.3.1", "antlr4-python3-runtime==4.9.3",
        "iopath==0.1.10", "portalocker==4.4.2", "tqdm==4.70.1", "packaging==26.4",
        "typing-extensions==4.16.0")
BINARY = ("pyyaml==6.0.4", "pillow==12.0.0")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


class BundleError(RuntimeError):
    """The bundle could not be built (the registry unreachable, a package missing)."""


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
        raise BundleError(f"{' '.join(cmd[2:])} failed:\n{tail}")


def _size_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def build(dest: Path, log=print) -> Path:
    """Build the bundle at ``dest`` (replacing it); BundleError when something is missing."""
    dest = Path(dest)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        staging = tmp / "bundle"
        log(f"pure-Python packages: {' '.join(PURE)}")
        _pip("install", "--no-deps", "--no-compile", "--target", str(staging), *PURE)
        log(f"CPython 3.12 wheels: {' '.join(BINARY)}")
        wheels = tmp / "wheels"
        platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
        _pip("download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
             "--implementation", "cp", "--abi", "cp312", *platform_args, "-d", str(wheels),
             *BINARY)
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as z:
                z.extractall(staging)
        log(f"Meta's predictor: {SAM2} (source distribution, Python files and configs)")
        sdists = tmp / "sdist"
        _pip("download", "--no-deps", "--no-binary=:all:", "--no-build-isolation", "-d",
             str(sdists), SAM2)
        archives = sorted(sdists.glob("sam2-*.tar.gz"))
        if not archives:
            raise BundleError(f"pip downloaded no source archive of {SAM2}")
        with tarfile.open(archives[0]) as tar:
            members = [m for m in tar.getmembers()
                       if "/sam2/" in m.name and "/csrc/" not in m.name and m.isfile()]
            for m in members:
                m.name = m.name[m.name.index("/sam2/") + 1:]
                tar.extract(m, staging, filter="data")
        if not (staging / "sam2" / "sam2_video_predictor.py").is_file():
            raise BundleError(f"{archives[0].name} holds no sam2/sam2_video_predictor.py")
        for junk in list(staging.rglob("__pycache__")) + list(staging.glob("bin")):
            shutil.rmtree(junk, ignore_errors=True)
        size = _size_mib(staging)
        if size > MAX_MIB:
            raise BundleError(f"the bundle is {size:.1f} MiB, over {MAX_MIB} MiB")
        (staging / "MANIFEST.txt").write_text(
            "Built by python -m engine.benchmarks.gpu_bundle for CPython 3.12 x86-64.\n"
            + "\n".join((SAM2,) + PURE + BINARY) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(staging, dest)
    log(f"wrote {dest} ({_size_mib(dest):.1f} MiB)")
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine.benchmarks.gpu_bundle",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    args = p.parse_args(argv)
    try:
        build(args.dest)
    except BundleError as err:
        print(f"gpu-bundle: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
