# The README's two commands. Each does its own set-up on a fresh machine (a .venv made with venv + pip).
#   make test        unit tests + every notebook under nbmake, in tiny mode
#   make reproduce   SFT vs RLVR vs EBFT on the three tasks at PRESET (default: tiny) -> results/$(PRESET)/

PYTHON ?= python3
VENV ?= .venv
PRESET ?= tiny
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export TRANSFORMERS_VERBOSITY := error

.PHONY: setup sandbox-deps test unit notebooks lab reproduce bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install "$(TORCH)" 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install -e ".[dev,notebooks,humaneval,scale]" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import ebft_repro, torch, transformers, nbmake, sacrebleu"
	touch $@

# The code sandbox isolates generated programs with bubblewrap (docs/sandbox.md); install it when missing
# (as root with apt-get), else say what to install. Without it the sandbox falls back, with a warning.
sandbox-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing bubblewrap for the code sandbox"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null 2>&1; } || \
	    echo "sandbox: could not install bubblewrap; run 'apt-get install bubblewrap'"; \
	  else \
	    echo "sandbox: bubblewrap (bwrap) not found; install it, e.g. 'sudo apt-get install bubblewrap'"; \
	  fi; }

setup: $(VENV)/.installed sandbox-deps

test: setup
	$(BIN)/python -m ebft_repro prepare --task all --preset tiny --verify none
	$(BIN)/python -m pytest -q --nbmake --nbmake-timeout=900 tests notebooks $(PYTEST_ARGS)

unit: setup
	$(BIN)/python -m pytest -q tests $(PYTEST_ARGS)

notebooks: setup
	$(BIN)/python -m ebft_repro prepare --task all --preset tiny --verify none
	$(BIN)/python -m pytest -q --nbmake --nbmake-timeout=900 notebooks $(PYTEST_ARGS)

# JupyterLab from the project's environment (jupyter is not on the PATH: it lives in $(VENV)/bin).
# Full mode by default; `EBFT_RUN_MODE=tiny make lab` for the seconds-long CI variant.
lab: setup
	$(BIN)/python -m ebft_repro prepare --task all --preset tiny --verify none
	$(BIN)/jupyter lab --notebook-dir=notebooks

reproduce: setup
	$(BIN)/python -m ebft_repro prepare --task all --preset $(PRESET)
	$(BIN)/python -m ebft_repro reproduce --preset $(PRESET)

bench: setup
	$(BIN)/python -m ebft_repro.experiments.bench sampler
	$(BIN)/python -m ebft_repro.experiments.bench sandbox

lint: setup
	$(BIN)/ruff check ebft_repro tests
	$(BIN)/ruff format --check ebft_repro tests

clean:
	rm -rf results/_tiny .pytest_cache
