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

.PHONY: install install-serve test lint image-check demo serve-demo clean mlflow-ui

# The browser tests drive Debian's Chromium (Playwright never downloads a browser here).
$(STAMP): pyproject.toml
	command -v chromium >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
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

# Both images of the Dockerfile built with podman, and one item appraised through the serve
# image; prints one line. It serves a tiny model trained here, or MODEL_DIR=path/to/model.
# The first run installs podman and makes a base image (needs root).
image-check: $(STAMP)
	bash scripts/image-check.sh $(MODEL_DIR)

demo: $(STAMP)
	$(BIN)/touchstone data synth --config configs/synthetic-phone.yaml --out $(DEMO_DIR)/data
	$(BIN)/touchstone data validate $(DEMO_DIR)/data/manifest.csv
	$(BIN)/touchstone data sheet $(DEMO_DIR)/data/manifest.csv --out $(DEMO_DIR)/sheet.png
	rm -rf $(DEMO_DIR)/run $(DEMO_DIR)/model $(DEMO_DIR)/evaluation $(DEMO_DIR)/recertify $(DEMO_DIR)/model-recertified
	$(BIN)/touchstone train --config configs/cpu-small.yaml --data $(DEMO_DIR)/data/manifest.csv --out $(DEMO_DIR)/run
	$(BIN)/touchstone data synth --config configs/synthetic-phone-holdout.yaml --out $(DEMO_DIR)/holdout
	$(BIN)/touchstone export --run $(DEMO_DIR)/run --data $(DEMO_DIR)/holdout/manifest.csv --out $(DEMO_DIR)/model
	$(BIN)/touchstone evaluate --model $(DEMO_DIR)/model --data $(DEMO_DIR)/holdout/manifest.csv --split test --out $(DEMO_DIR)/evaluation
	$(BIN)/python scripts/demo_recertify.py --model $(DEMO_DIR)/model --data $(DEMO_DIR)/holdout/manifest.csv --work $(DEMO_DIR)/recertify --out $(DEMO_DIR)/model-recertified --items 400
	$(BIN)/python benchmarks/serve.py --photos phone --quick --headline --model $(DEMO_DIR)/model --run $(DEMO_DIR)/run
	$(MAKE) --no-print-directory serve-demo

# The appraisal API on the demo model, in the foreground (Ctrl-C stops it): a trusted back end's
# key (`member_backend`: it names the member on each call; the members' app would need a member
# token signed by the platform) and a curl command that uploads one test item's photos, a
# reviewer key, and a few items waiting in the review queue for the reviewers' web app.
serve-demo: $(STAMP)
	rm -rf $(DEMO_DIR)/service
	$(BIN)/touchstone admin create-key --role member_backend --data-dir $(DEMO_DIR)/service --label demo | tail -n 1 > $(DEMO_DIR)/backend-key
	$(BIN)/touchstone admin create-key --role platform --data-dir $(DEMO_DIR)/service --label demo-platform | tail -n 1 > $(DEMO_DIR)/platform-key
	$(BIN)/touchstone admin create-key --role reviewer --data-dir $(DEMO_DIR)/service --label demo-reviewer | tail -n 1 > $(DEMO_DIR)/reviewer-key
	@item=$$(awk -F, '$$8=="test" {print $$2; exit}' $(DEMO_DIR)/holdout/manifest.csv); \
	category=$$(awk -F, -v item=$$item '$$2==item {print $$5; exit}' $(DEMO_DIR)/holdout/manifest.csv); \
	parts=$$(awk -F, -v item=$$item -v dir=$(DEMO_DIR)/holdout '$$2==item {printf " -F %s=@%s/%s", $$3, dir, $$1}' $(DEMO_DIR)/holdout/manifest.csv); \
	echo "curl -s -X POST http://127.0.0.1:8000/v1/appraisals -H \"Authorization: Bearer $$(cat $(DEMO_DIR)/backend-key)\" -H 'Idempotency-Key: demo-$$item' -F member_id=demo-member -F category=$$category$$parts" > $(DEMO_DIR)/appraise.sh
	@$(BIN)/touchstone serve --model $(DEMO_DIR)/model --data-dir $(DEMO_DIR)/service --port 8000 & server=$$!; \
	trap 'kill $$server 2>/dev/null' INT TERM EXIT; \
	$(BIN)/python -m serving.demo --url http://127.0.0.1:8000 --key $$(cat $(DEMO_DIR)/backend-key) --platform-key $$(cat $(DEMO_DIR)/platform-key) --manifest $(DEMO_DIR)/holdout/manifest.csv; \
	echo; echo "The service runs on http://127.0.0.1:8000 (API docs at /docs; Ctrl-C stops it)."; \
	echo "Appraise a test item from another terminal:  sh $(DEMO_DIR)/appraise.sh | python3 -m json.tool"; \
	echo "which runs:"; cat $(DEMO_DIR)/appraise.sh; echo; \
	echo "Reviewers: open http://127.0.0.1:8000/review/login and sign in with the key in $(DEMO_DIR)/reviewer-key:"; \
	cat $(DEMO_DIR)/reviewer-key; \
	wait $$server

clean:
	rm -rf $(DEMO_DIR) .pytest_cache

# The tracking store of every run: http://127.0.0.1:5000
mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///experiments/mlflow.db --port 5000
