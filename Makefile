# Two commands: `make toy` (set up, then run the toy pipeline end to end) and `make test`.
# TORCH selects the torch build; the default pair installs and runs on our CPU-only machines
# (see README, "GPU machines", for CUDA wheels).
VENV  ?= .venv
TORCH ?= torch==2.14.1 torchvision==0.29.1

export PATH := $(abspath $(VENV))/bin:$(PATH)
export HF_HUB_OFFLINE ?= 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1

.PHONY: setup system-deps toy test test-fast
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(VENV)/bin/pip install $(TORCH) -e '.[test]'
	touch $@

# Debian packages the tests use: headless Chromium (report screenshot). SLURM installs itself
# in scripts/slurm/start.sh when the SLURM tests start.
system-deps:
	scripts/system_deps.sh

toy: setup
	scripts/snakemake_resume.sh --cores 2 reproduce_all   # reruns what a killed run left half done

test: setup system-deps
	python -m pytest -q tests

# The developer's tier: everything but the system tests (SLURM, Chromium, DDP, whole pipelines).
test-fast: setup
	python -m pytest -q -m "not system" tests
