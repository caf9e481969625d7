# fastmath: every user-facing command. `make help` lists them.
PY      ?= python3
RECIPE  ?=
ARGS    ?=
OUTPUTS ?= outputs
TINY    ?= models/tiny-qwen2

.PHONY: help install test lint sft dpo pairs eval prompts app quickstart bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

install:  ## install the pinned stack (+ Unsloth/bitsandbytes/xformers when a CUDA GPU is present)
	$(PY) -m pip install -r requirements.txt
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "CUDA GPU found: installing requirements-gpu.txt"; $(PY) -m pip install -r requirements-gpu.txt; \
	else echo "no CUDA GPU: skipping requirements-gpu.txt (Unsloth, bitsandbytes, xformers)"; fi

lint:  ## ruff lint + format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint  ## lint, then the whole test suite (CPU, offline)
	$(PY) -m pytest -q

sft:  ## supervised fine-tuning: make sft RECIPE=recipes/x.yaml ARGS="lora.r=8"
	$(PY) -m fastmath sft $(or $(RECIPE),recipes/qwen2.5-7b-sft.yaml) $(ARGS)

quickstart:  ## offline CPU demo on a tiny model the project builds: minutes
	$(PY) -m fastmath tiny-model $(TINY)
	$(PY) -m fastmath sft recipes/tiny-sft.yaml training.output_dir=$(OUTPUTS) $(ARGS)

clean:  ## remove outputs/ and models/ (runs and tiny models)
	rm -rf outputs models
