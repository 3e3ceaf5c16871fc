# Every target bootstraps .venv itself (idempotent: a stamp file skips the install when it is current).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-slow table plot bench gpu-check lint clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
# foolbox: its 20 labelled ImageNet photos (its data folder only; its dependencies are not needed)
	$(BIN)/pip install --disable-pip-version-check -q --no-deps foolbox==3.3.4
	touch $(STAMP)

demo: $(STAMP)          ## the offline demo: standard FT vs FLOW on a synthetic task, 6 seeds, paired FT−FLOW interval
	$(BIN)/flowvision demo

# --dist loadfile: each test file runs in one worker, so a module's shared setup (a drawn set of figures, the
# 20,580-image Dogs task) is built once, not once per worker
test: $(STAMP)          ## the fast CPU suite (what CI runs), one worker process per core (at most 2)
	FLOWVISION_QUIET=1 $(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadfile

test-slow: $(STAMP)
	FLOWVISION_QUIET=1 $(BIN)/python -m pytest -q -m slow || [ $$? -eq 5 ]   # 5: no test is marked slow

table: $(STAMP)         ## print and write the paper's tables (ours beside the paper's) and results/REPRODUCIBILITY.md from results/runs
	$(BIN)/flowvision table

plot: $(STAMP)
	$(BIN)/flowvision plot

# gpu-check runs where the GPU is: with this checkout's .venv, or, given PYTHON on the command line
# (make gpu-check PYTHON=python3), with that interpreter as it is: no .venv, no install, no network; a
# missing package is named in one line with how to bring it as wheels (docs/speed.md).
ifeq ($(origin PYTHON),command line)
CHECK_PYTHON := $(PYTHON)
CHECK_NEEDS  :=
else
CHECK_PYTHON := $(BIN)/python
CHECK_NEEDS  := $(STAMP)
endif

gpu-check: $(CHECK_NEEDS)  ## on a CUDA machine, < 8 min: CUDA tests, rates, a real-scale cell, compile -> results/gpu-check.json
	@FLOWVISION_QUIET=1 $(CHECK_PYTHON) -m flowvision.scale.gpucheck $(CHECK_ARGS)

bench: $(STAMP)         ## speed ratios measured side by side in one run
	$(BIN)/flowvision bench

clean:
	rm -rf $(VENV) build *.egg-info
