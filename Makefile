# Two set-up commands: `make train` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: train test test-fast bench clean

# torch is installed first and pinned, so pip takes the CPU wheel on disk, never a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

train: $(STAMP)
	$(PY) train.py experiment=demo

test: $(STAMP)
	$(PY) -m pytest -q

# The suite without the end-to-end runs marked `slow`.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) -m ptdistill.bench.ptv3_speed
	$(PY) -m ptdistill.bench.persistence
	$(PY) -m ptdistill.bench.data_throughput
	$(PY) -m ptdistill.bench.distill_step

clean:
	rm -rf outputs multirun lightning_logs .pytest_cache
