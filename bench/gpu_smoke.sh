#!/usr/bin/env bash
# The user path on a GPU, then the fast-vs-baseline comparison, in one command for a lent device.
#
#   here, once:  bash ../shared/device/gpu-bundle.sh .gpu-site
#                mkdir -p .gpu-data && cp -r ../shared/data/gsm8k .gpu-data/
#   on the GPU:  (carry [".gpu-site", ".gpu-data"])
#                export PYTHONPATH=$PWD/.gpu-site:$PWD HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1
#                bash bench/gpu_smoke.sh            # ~9 minutes on one H100/H200
#
# 1. The QLoRA chain: `make sft`, `make pairs`, `make dpo`, `make grpo`, `make eval`, `fastmath solve`,
#    `make export` (merged into the 16-bit base, and GGUF), each with a few steps, on a
#    Qwen2.5-1.5B-shaped model with random weights (built here, no hub), model.backend=unsloth, 4-bit
#    (the recipes' model.load_in_4bit): the commands a user types first, through Unsloth's fused kernels.
# 2. `bench/gpu_compare.py --shape 7b --parts sft,dpo,eval`: Unsloth against transformers + PEFT.
# 3. The 7B recipe's GSM8K greedy CoT eval through vLLM (`eval.engine=vllm`), all 1,319 test problems, on
#    the 7B-shaped random model gpu_compare builds (issue #21; ENGINE_EVAL=none skips it, and it follows
#    COMPARE by default). Alone, in one device command: SHAPE=none COMPARE=none ENGINE_EVAL=7b.
# Every summary and the comparison's JSON go to $OUT (the device tool returns that folder), and the
# log of each step to $OUT/logs. A step that fails is reported and the next one still runs.
#
# SHAPE=tiny COMPARE=none bash bench/gpu_smoke.sh runs the same path on a CPU in a few minutes (the
# tests do), 4-bit too: bitsandbytes' CPU backend.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu-smoke}
SHAPE=${SHAPE:-1.5b}
COMPARE=${COMPARE:-7b}
WORK=${WORK:-bench/.work/smoke}
BUDGET=${BUDGET:-540}  # seconds for everything: a device command may run 10 minutes at most
EVAL_SAMPLES=${EVAL_SAMPLES:-64}
ENGINE_EVAL=${ENGINE_EVAL:-$COMPARE}
DATA=${DATA:-.gpu-data/gsm8k}
[ -f "$DATA/train.jsonl" ] || DATA=../shared/data/gsm8k
mkdir -p "$OUT/logs" "$WORK"
failed=()

step() {  # step NAME SECONDS COMMAND...: one step, at most SECONDS and what is left of BUDGET; log in $OUT/logs
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - SECONDS))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -le 5 ]; then
        echo "== $name: skipped, the time budget is spent"
        failed+=("$name")
        return
    fi
    echo "== $name (at most ${limit} s): $*"
    local start=$SECONDS
    if timeout "$limit" "$@" >"$OUT/logs/$name.log" 2>&1; then
        echo "   ok in $((SECONDS - start)) s"
    else
        echo "   FAILED (exit $?) after $((SECONDS - start)) s; last lines:"
        tail -n 15 "$OUT/logs/$name.log"
        failed+=("$name")
    fi
}

python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" | tee "$OUT/logs/device.txt"
if [ "$SHAPE" != none ]; then
MODEL=$WORK/qwen2.5-$SHAPE-random
step model 120 python3 -c "from bench import common; print(common.ensure_model('$SHAPE', __import__('pathlib').Path('$MODEL')))"

RUNS=$WORK/outputs
SFT=$RUNS/smoke-sft
rm -rf "$RUNS"
COMMON="model.backend=unsloth training.output_dir=$RUNS training.report_to=none training.logging_steps=1"
step sft 150 make sft ARGS="model.name=$MODEL $COMMON data.train=$DATA/train.jsonl data.limit=64 \
    training.max_steps=10 training.save_steps=5 training.run_name=smoke-sft"
step pairs 90 make pairs ARGS="dpo.sft_run=$SFT $COMMON data.train=$DATA/train.jsonl dpo.problems=8 \
    dpo.samples_per_problem=4 eval.max_new_tokens=128"
# A random model's samples are all wrong, so its mined pairs may be none: the shipped pairs stand in.
PAIRS=$SFT/pairs.jsonl
[ -s "$PAIRS" ] || PAIRS=fastmath:samples/preference_data.json
step dpo 90 make dpo ARGS="dpo.sft_run=$SFT dpo.pairs=$PAIRS $COMMON dpo.max_steps=5 training.run_name=smoke-dpo"
step eval 90 make eval ARGS="--lora $SFT --output-dir $RUNS --dataset $DATA/test.jsonl --samples $EVAL_SAMPLES \
    --max-new-tokens 128 model.backend=unsloth"
step grpo 90 make grpo ARGS="grpo.sft_run=$SFT $COMMON data.train=$DATA/train.jsonl grpo.problems=4 \
    grpo.batch_size=4 grpo.num_generations=2 grpo.max_completion_length=64 grpo.max_steps=2 training.run_name=smoke-grpo"
step solve 60 python3 -m fastmath solve "1 + 1 = ?" --lora "$SFT" --max-new-tokens 16
step export-merged 90 make export RUN="$SFT" ARGS="--format merged"
step export-gguf 120 make export RUN="$SFT" ARGS="--format gguf --quant q8_0 --pre-tokenizer qwen2"
for run in smoke-sft smoke-dpo smoke-grpo; do
    [ -f "$RUNS/$run/summary.json" ] && cp "$RUNS/$run/summary.json" "$OUT/$run.summary.json"
done
[ -f "$SFT/eval/test/summary.json" ] && cp "$SFT/eval/test/summary.json" "$OUT/smoke-eval.summary.json"
fi

if [ "$COMPARE" != none ]; then
    step compare 420 python3 bench/gpu_compare.py --shape "$COMPARE" --parts sft,dpo,eval --steps 12 --dpo-steps 6 \
        --eval-problems 128 --sequential-problems 8 --data "$DATA/train.jsonl" --test-data "$DATA/test.jsonl" \
        --results-dir "$OUT" --docs "$OUT/logs/benchmarks.md"
fi

if [ "$ENGINE_EVAL" != none ]; then
    EVAL_MODEL=bench/.work/models/qwen2.5-$ENGINE_EVAL-random  # common.model_dir: where gpu_compare builds it
    EVAL_RUNS=$WORK/engine-eval
    step model-$ENGINE_EVAL 240 python3 -c "from bench import common; print(common.ensure_model('$ENGINE_EVAL', \
        __import__('pathlib').Path('$EVAL_MODEL')))"
    rm -rf "$EVAL_RUNS"
    # model.max_seq_length sizes vLLM's context (it + max_new_tokens): the tiny tokenizer the random model
    # reads with splits the CoT prompt into ~1,200 tokens, past the recipe's 1,024 (vLLM refuses it)
    step vllm-eval 420 python3 -m fastmath eval recipes/qwen2.5-7b-sft.yaml --model "$EVAL_MODEL" \
        --dataset "$DATA/test.jsonl" --strategies cot --output-dir "$EVAL_RUNS" eval.engine=vllm model.max_seq_length=2048
    summary=$EVAL_RUNS/base-qwen2.5-$ENGINE_EVAL-random/eval/test/summary.json
    [ -f "$summary" ] && cp "$summary" "$OUT/vllm-eval-$ENGINE_EVAL.summary.json"
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "failed steps: ${failed[*]} (logs in $OUT/logs)"
    exit 1
fi
echo "all steps passed; results in $OUT"
