# genarena: `make install`, then `make compare` (the main job), and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST := $(BIN)/python -m pytest
# clones of FoundationVision/VAR and LTH14/mar for benchmarks/vs_official.py (see README, Benchmarks)
OFFICIAL ?= official

.PHONY: install test test-all lint compare tokenizers benchmarks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python  ## create .venv and install genarena with its dev tools
	$(BIN)/pip install -e ".[dev]"

test:  ## the fast suite (CPU, minutes)
	$(PYTEST) -m "not slow" -q

test-all:  ## everything, slow tests included
	$(PYTEST) -q

lint:
	$(BIN)/ruff check src tests

compare:  ## the main job: tokenizers + four paradigms on mnist5k, evaluated, with a report
	$(BIN)/genarena-compare

tokenizers:  ## train the three tokenizers on mnist5k and write reconstruction grids
	$(BIN)/genarena-train -m task=tokenizer tokenizer=vq,msvq,kl sweep_name=tokenizers

benchmarks:  ## re-run the benchmark scripts (long: about 2 hours on 2 cores); figures land in benchmarks/
	$(BIN)/python benchmarks/tokenizers.py
	$(BIN)/python benchmarks/generators.py
	$(BIN)/python benchmarks/sampling_speed.py
	@if [ -d runs/compare/mnist5k ]; then \
		$(BIN)/python benchmarks/editing.py --runs runs/compare/mnist5k && $(BIN)/python benchmarks/mar_samplers.py; \
	else \
		echo "skipping benchmarks/editing.py and mar_samplers.py: they score make compare's runs (run make compare first)"; \
	fi
	$(BIN)/python benchmarks/official_architectures.py
	$(BIN)/python benchmarks/cli_startup.py
	@if [ -d "$(OFFICIAL)/VAR" ] && [ -d "$(OFFICIAL)/mar" ]; then \
		$(BIN)/python benchmarks/vs_official.py --var-repo $(OFFICIAL)/VAR --mar-repo $(OFFICIAL)/mar; \
	else \
		echo "skipping benchmarks/vs_official.py: no clones of the official code in $(OFFICIAL)/VAR and" \
		     "$(OFFICIAL)/mar (see README, Benchmarks; OFFICIAL=<dir> points elsewhere)"; \
	fi

clean:
	rm -rf runs multirun outputs .pytest_cache
