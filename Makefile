# Two entry points on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lint bench docs install clean

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints-cpu.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints-cpu.txt -e ".[dev,docs,ray,hf]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mdmprob run block-hmm-eta --out out/block-hmm-eta

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m slow

lint: $(STAMP)
	$(BIN)/ruff check mdmprob models tests bench tutorials docs

bench: $(STAMP)
	$(BIN)/python bench/bench_engine.py
	$(BIN)/python bench/bench_compile.py
	$(BIN)/python bench/bench_decoders.py
	$(BIN)/python bench/bench_dependency_aware.py
	$(BIN)/python bench/bench_neural.py
	$(BIN)/python bench/bench_arithmetic_training.py
	$(BIN)/python bench/bench_cli.py

clean:
	rm -rf $(VENV) build *.egg-info

docs: $(STAMP)
	$(BIN)/mkdocs build --strict
