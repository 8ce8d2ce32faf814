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

.PHONY: install install-serve test lint demo clean mlflow-ui

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
	rm -rf $(DEMO_DIR)/run $(DEMO_DIR)/model $(DEMO_DIR)/evaluation
	$(BIN)/touchstone train --config configs/cpu-small.yaml --data $(DEMO_DIR)/data/manifest.csv --out $(DEMO_DIR)/run
	$(BIN)/touchstone data synth --config configs/synthetic-holdout.yaml --out $(DEMO_DIR)/holdout
	$(BIN)/touchstone export --run $(DEMO_DIR)/run --data $(DEMO_DIR)/holdout/manifest.csv --out $(DEMO_DIR)/model
	$(BIN)/touchstone evaluate --model $(DEMO_DIR)/model --data $(DEMO_DIR)/holdout/manifest.csv --split test --out $(DEMO_DIR)/evaluation

clean:
	rm -rf $(DEMO_DIR) .pytest_cache

# The tracking store of every run: http://127.0.0.1:5000
mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///experiments/mlflow.db --port 5000
