# Two commands do all the set-up on a fresh machine:
#   make demo   -> creates .venv if missing, installs, runs the main job on the bundled toy model
#   make test   -> same install, then: export check, clean check, nbdev_test, pytest
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision pins that import together on CPU (see DESIGN.md); override e.g. TORCH_SPEC="torch"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
export HF_HUB_DISABLE_TELEMETRY=1
export YOLO_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
# one thread per process: nbdev_test runs notebooks in parallel, and oversubscribed torch is many times slower
export OMP_NUM_THREADS ?= 1
export YOLO_AUTOINSTALL=False
# ultralytics writes its settings file here, not in ~/.config
export YOLO_CONFIG_DIR ?= $(CURDIR)/.venv/ultralytics

.PHONY: install demo test export clean-nbs nbtest pytest bench docs readme

$(STAMP): settings.ini setup.py
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/diffstyler demo --out demo-output --overwrite

test: install
	@echo "== 1/4 nbdev_export leaves the tree unchanged"
	PATH=$(abspath $(BIN)):$$PATH scripts/unchanged.sh $(BIN)/nbdev_export
	@echo "== 2/4 nbdev_clean leaves the tree unchanged"
	PATH=$(abspath $(BIN)):$$PATH scripts/unchanged.sh $(BIN)/nbdev_clean
	@echo "== 3/4 nbdev_test (all notebooks, CPU)"
	$(BIN)/nbdev_test --n_workers 2 --timing
	@echo "== 4/4 pytest"
	$(BIN)/python -m pytest tests/ -q

export: install
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

bench: install
	$(BIN)/python bench/injection.py
	$(BIN)/python bench/lora.py

# Docs: with Quarto installed use nbdev_docs; offline, nbdev_proc_nbs renders the processed notebooks to _proc/
docs: install
	$(BIN)/nbdev_proc_nbs
readme: install
	$(BIN)/python scripts/make_readme.py
