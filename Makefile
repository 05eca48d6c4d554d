# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= runs/demo

.PHONY: install demo test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# the model zoo's loader (robustbench 1.1.1) pins old timm and gdown releases; it runs with
	# the current ones, so it is installed without its pins for the zoo's offline tests
	$(BIN)/python -m pip install --quiet --no-deps "robustbench==1.1.1" "pyautoattack>=0.2" \
		geotorch torchdiffeq gdown beautifulsoup4 soupsieve
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ncrobust demo --out $(DEMO_OUT) --overwrite

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/ncrobust bench collapse
	$(BIN)/ncrobust bench attacks
	$(BIN)/ncrobust bench train

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
