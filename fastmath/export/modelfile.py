"""An Ollama Modelfile beside a GGUF, so `ollama run` answers as fastmath's evaluation asks.

TEMPLATE: a chat template is Jinja, Ollama's is Go, and there is no general translation. fastmath's
models speak ChatML (Qwen), so the Modelfile carries Ollama's ChatML template, and only after the
model's own Jinja template is rendered on probe conversations and found to equal ChatML exactly;
otherwise no TEMPLATE is written and Ollama falls back to the GGUF's embedded template. Ollama's
`.System` is every system message joined (its `collate`) while `.Messages` still holds them, so
system messages are skipped in the range; a request without one gets the Modelfile's SYSTEM.

SYSTEM: the prompt the run was trained with (its recipe's data.system_prompt), else fastmath's
built-in one in the training data's language (English unless the recipe said zh): the prompt
fastmath's own eval asks with. PARAMETERs: greedy as the eval decodes (temperature 0, and
repeat_penalty 1 because Ollama's default 1.1 changes greedy output), the eval's answer length,
and stops at ChatML's markers and every EOS id of the model.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastmath import runs
from fastmath.config import EvalConfig
from fastmath.errors import FastmathError
from fastmath.log import log
from fastmath.prompts import SYSTEM_PROMPTS

CHATML_GO_TEMPLATE = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}\n"
    "{{- range .Messages }}\n"
    '{{- if ne .Role "system" }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}\n'
    "{{- end }}<|im_start|>assistant\n"
)
CHATML_MARKERS = ("<|im_start|>", "<|im_end|>")
NUM_CTX = 4096  # fastmath's longest prompts (8-shot CoT, ~1.5k tokens) plus an answer, capped by the model's own

# Conversations as Ollama renders them with SYSTEM set: a system message first, then turns.
PROBES = (
    [{"role": "system", "content": "S"}, {"role": "user", "content": "What is 2+3?"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "答案是多少？\n"},
    ],
)


def chatml(messages: list[dict[str, str]]) -> str:
    """What CHATML_GO_TEMPLATE renders under Ollama for `messages` (one leading system message)."""
    system = [m["content"] for m in messages if m["role"] == "system"]
    text = "".join(f"<|im_start|>system\n{s}<|im_end|>\n" for s in system[:1])
    text += "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages if m["role"] != "system")
    return text + "<|im_start|>assistant\n"


def speaks_chatml(tokenizer) -> bool:
    """Whether the model's own chat template renders every probe exactly as ChatML."""
    return all(
        tokenizer.apply_chat_template(list(m), tokenize=False, add_generation_prompt=True) == chatml(list(m))
        for m in PROBES
    )


def system_prompt(run: Path) -> str:
    """The run's training system prompt, else fastmath's built-in one in its training data's language."""
    trained = runs.saved_recipe(run).data if (run / runs.RECIPE).is_file() else None
    if trained and trained.system_prompt:
        return trained.system_prompt
    return SYSTEM_PROMPTS["zh" if trained and trained.language == "zh" else "en"]


def _quoted(text: str) -> str:
    if '"""' in text:
        raise FastmathError('a Modelfile value cannot hold """; change the run\'s system prompt')
    return f'"""{text}"""'


def write(out_dir: Path, gguf_name: str, model_dir: Path, run: Path) -> Path:
    """`Modelfile` in `out_dir`, for the GGUF `gguf_name` converted from `model_dir` (a merged model)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    generation = json.loads((model_dir / "generation_config.json").read_text(encoding="utf-8"))
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    eos = generation.get("eos_token_id", config.get("eos_token_id"))
    eos_tokens = tokenizer.convert_ids_to_tokens(eos if isinstance(eos, list) else [eos])
    lines = [
        "# Ollama: ollama create <name> -f Modelfile   (in this folder), then ollama run <name>",
        f"# from fastmath run {run.name}; SYSTEM is the prompt fastmath trained and evaluates it with",
        f"FROM ./{gguf_name}",
        "",
    ]
    if speaks_chatml(tokenizer):
        lines += [f"TEMPLATE {_quoted(CHATML_GO_TEMPLATE)}", ""]
        stops = [*CHATML_MARKERS, *eos_tokens]
    else:
        log.warning("the chat template is not ChatML: no TEMPLATE in the Modelfile, Ollama uses the GGUF's own")
        stops = list(eos_tokens)
    lines += [f"SYSTEM {_quoted(system_prompt(run))}", ""]
    lines += [f'PARAMETER stop "{s}"' for s in dict.fromkeys(stops)]
    lines += [
        "PARAMETER temperature 0",
        "PARAMETER repeat_penalty 1",
        f"PARAMETER num_ctx {min(NUM_CTX, config.get('max_position_embeddings', NUM_CTX))}",
        f"PARAMETER num_predict {EvalConfig().max_new_tokens}",
        "",
    ]
    path = out_dir / "Modelfile"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
