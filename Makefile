# The two commands in the README. Everything installs into .venv with pip (never uv or
# poetry: pip takes torch from this machine's local disk).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Nothing may touch the network at import or run time.
export NO_ALBUMENTATIONS_UPDATE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1

DEMO_DIR ?= experiments/demo

.PHONY: install install-serve test lint demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -e '.[train,serve,dev]'
	touch $(STAMP)

install: $(STAMP)

# The serving image: no torch.
install-serve:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install '.[serve]'

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: $(STAMP)
	$(BIN)/touchstone data synth --config configs/synthetic-standard.yaml --out $(DEMO_DIR)/data
	$(BIN)/touchstone data validate $(DEMO_DIR)/data/manifest.csv
	$(BIN)/touchstone data sheet $(DEMO_DIR)/data/manifest.csv --out $(DEMO_DIR)/sheet.png

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
