# One-command setup and test on a fresh machine with only Python 3.11 and pip.
# `make test` creates .venv, installs the pinned requirements (skipped when nothing changed) and runs the suite.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Keep every DDS packet on loopback (Jazzy reads the first, Humble the second).
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_LOCALHOST_ONLY := 1
export MUJOCO_GL ?= egl
# onnxruntime (test-only, ONNX export checks) uploads telemetry on Linux unless told not to.
export ORT_DISABLE_TELEMETRY := 1
export ORT_TELEMETRY_DISABLED := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: test lint venv clean demo

venv: $(STAMP)

$(STAMP): requirements.txt setup.py setup.cfg package.xml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps stable-worldmodel==0.1.1
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# The reaching demo: simulator + LeWM agent over ROS 2 in one process, 5 episodes, shipped bundle.
# Prints each episode and the success rate; demo_out/ gets summary.json and sim_reach.gif.
demo: $(STAMP)
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(( $$$$ % 100 + 1 ))} $(VENV)/bin/lewm-ros sim-reach --episodes 5 --headless --out demo_out

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache demo_out
