# The two commands: `make demo` (the main job) and `make test` (the test suite).
# Both create or complete the virtual environment first (./setup_venv.sh, idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test
setup:
	@./setup_venv.sh

demo: setup
	$(PY) -m sam2_ros.demo $(ARGS)

test: setup
	$(PY) -m pytest -q tests $(ARGS)
