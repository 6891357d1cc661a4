# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# PyTorch build. TORCH=cpu (the default): torch and torchvision are first installed from the PyTorch CPU
# wheel index, where it can be reached. PyPI's Linux x86-64 wheels are CUDA builds, which cost every process
# ~290 MB more memory and ~0.3 s more start-up (README, "Start-up and memory"). If that index cannot be
# reached (offline), or what it gives does not import as a CPU-only pair, the default build is installed
# instead and a line says so. TORCH=cuda: PyPI's default build, for a GPU. After changing it, `make clean`.
TORCH ?= cpu
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PINS := 'torch>=2.13,<2.15' 'torchvision>=0.28,<0.30'
CPU_PAIR_CHECK := import sys, torch, torchvision; sys.exit(torch.version.cuda is not None)
ifeq ($(filter $(TORCH),cpu cuda),)
$(error TORCH must be cpu or cuda, not '$(TORCH)')
endif

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
ifeq ($(TORCH),cpu)
	@# --isolated: that index alone, without the extra indexes or find-links of pip's user config
	@if $(BIN)/python -m pip --isolated install -q --retries 0 --timeout 20 \
	        --index-url $(TORCH_CPU_INDEX) $(TORCH_PINS) >/dev/null 2>&1 \
	    && $(BIN)/python -c "$(CPU_PAIR_CHECK)" >/dev/null 2>&1; then \
	    echo "torch: CPU-only build from $(TORCH_CPU_INDEX)"; \
	else \
	    $(BIN)/python -m pip uninstall -q -y torch torchvision >/dev/null 2>&1; \
	    echo "torch: no CPU-only build from $(TORCH_CPU_INDEX) (offline?); installing the default build"; \
	fi
endif
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sequoia-clinic demo

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benches/bench_tiles.py
	$(BIN)/python benches/bench_encoder.py
	$(BIN)/python benches/bench_precision.py
	$(BIN)/python benches/bench_train.py
	$(BIN)/python benches/bench_cohort.py
	$(BIN)/python benches/bench_start.py

# Static checks, run first by `make test` (and so by CI): lint, formatting, types.
lint: $(STAMP)
	$(BIN)/ruff check sequoia_clinic tests benches
	$(BIN)/ruff format --check sequoia_clinic tests benches
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
