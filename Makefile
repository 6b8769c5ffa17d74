# The two commands: `make demo` (the main job) and `make test` (the test suite).
# Both create or complete the virtual environment first (./setup_venv.sh, idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test gpu-bundle gpu-check
setup:
	@./setup_venv.sh

demo: setup
	$(PY) -m sam2_ros.demo $(ARGS)

test: setup
	$(PY) -m pytest -q tests $(ARGS)

# The GPU check (engine/benchmarks/gpu.py) and the folder of pure-Python packages it carries to
# a GPU machine where nothing can be installed (built here, from the package registry).
# gpu-check runs the venv's Python where there is one, else the machine's python3.
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
gpu-bundle: setup
	$(PY) -m engine.benchmarks.gpu_bundle $(ARGS)

gpu-check:
	$(GPU_PY) -m engine.benchmarks.gpu $(ARGS)
