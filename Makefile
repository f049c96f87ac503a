# Two commands do all the set-up on a fresh machine:
#   make demo   -> creates .venv if missing, installs, runs the main job on the bundled toy model
#   make test   -> same install, then: export check, clean check, nbdev_test, pytest
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision pins that import together on CPU (torchvision must match torch's release; 2.14.1 is on this
# machine's local wheel index); override e.g. TORCH_SPEC="torch"
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

.PHONY: install demo test export clean-nbs nbtest pytest bench docs docs-check dist release-check readme

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

# Docs site in _site/, offline, from the notebooks' committed outputs (nothing is re-run): nbdev's doc processing through
# its Python API, then Sphinx + myst-nb (scripts/build_docs.py). Installs only into .venv (the `docs` extra) and
# docs/node_modules (MathJax and the widget manager, served by the site itself). Never `nbdev_docs`/`nbdev_proc_nbs`
# without Quarto: they try sudo, then pip-install the dev stack with whatever pip is first on PATH.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP) settings.ini setup.py
	$(BIN)/python -m pip install -q -e ".[dev,docs]"
	@touch $(DOCS_STAMP)
docs/node_modules/.installed: docs/package.json docs/package-lock.json
	@command -v npm >/dev/null || { echo "make docs needs npm (Debian: apt-get install -y npm)"; exit 1; }
	npm ci --prefix docs --no-audit --no-fund --ignore-scripts --loglevel=error
	@touch $@
docs: $(DOCS_STAMP) docs/node_modules/.installed
	$(BIN)/python scripts/build_docs.py
# the built site in headless Chromium (Debian's /usr/bin/chromium; .ci/run installs it): console errors, figures, widgets
docs-check: docs
	@test -x /usr/bin/chromium || { echo "docs-check needs Debian's chromium: apt-get install -y chromium"; exit 1; }
	$(BIN)/python scripts/check_site.py

# Release: wheel + sdist (with the toy weights) in dist/, twine check, then the wheel in a fresh venv runs the demo
dist: install
	rm -rf dist && $(BIN)/python -m build --outdir dist && $(BIN)/python -m twine check --strict dist/*
# REUSE=all (default): the fresh venv reuses .venv's packages (pip check); REUSE=torch / none: resolve from the index
REUSE ?= all
release-check: install
	REUSE="$(REUSE)" DEMO_ARGS="$(DEMO_ARGS)" TORCH_SPEC="$(TORCH_SPEC)" scripts/release_check.sh $(abspath $(BIN))/python
readme: install
	$(BIN)/python scripts/make_readme.py
