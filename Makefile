# Two commands: `make toy` (set up, then run the toy pipeline end to end) and `make test`.
# TORCH selects the torch build; the default pair is the one that installs and runs on a CPU-only
# machine of ours (see README, "GPU machines" for CUDA wheels).
VENV  ?= .venv
PY    := $(VENV)/bin/python
TORCH ?= torch==2.14.1 torchvision==0.29.1

export HF_HUB_OFFLINE ?= 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1

.PHONY: setup toy test
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(VENV)/bin/pip install $(TORCH) -e '.[test]'
	touch $@

toy: setup
	$(VENV)/bin/clipvis data --benchmark toy --root data
	$(VENV)/bin/clipvis score --gt data/toy/toy_lvvis/annotations.json --results data/toy/toy_lvvis/oracle_results.json --out reports/toy_oracle_metrics.json

test: setup
	$(PY) -m pytest -q tests
