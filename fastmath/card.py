"""The model card: README.md of a run directory and of each export, what a hub page shows.

Written from what the run recorded, nothing else: run.json, recipe.yaml, summary.json, the
adapter's config and tokenizer files, and every evaluation's summary.json. It replaces PEFT's
empty template after training and is rewritten after each evaluation (`after_evaluation`), under
a lock and by an atomic rename, so evaluations that finish at once never leave a torn card.

The YAML front matter is built by huggingface_hub's own `ModelCardData` and `EvalResult` (base_model,
library_name, tags, datasets, licence, and a model-index holding every accuracy), so the card
uploads as a valid hub card and `huggingface_hub.ModelCard` reads it back offline.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from fastmath import resources, runs, trackers
from fastmath.hub import looks_like_path
from fastmath.io import atomic_write_text, exclusive

CARD = "README.md"
METHODS = {"sft": "supervised fine-tuning (SFT)", "dpo": "direct preference optimisation (DPO)",
           "grpo": "group relative policy optimisation (GRPO, rewards from fastmath's grader)"}  # fmt: skip
HUB_DATASETS = {"gsm8k": "openai/gsm8k", "mgsm_zh": "juletxara/mgsm", "mgsm_en": "juletxara/mgsm"}
LIBRARY = {None: "peft", "merged": "transformers", "gguf": "gguf"}


def after_evaluation(run: Path, dataset: str, summaries: dict[str, dict[str, Any]]) -> None:
    """An evaluation finished: log it into the run's trackers and rewrite its card."""
    trackers.log_evaluation(run, dataset, summaries)
    write(run)


def write(run: Path) -> Path:
    """Rewrite `<run>/README.md` from what the run holds now (one writer at a time, atomically)."""
    path = run / CARD
    with exclusive(path, "the model card", wait=True):
        atomic_write_text(path, render(run))
    return path


def write_export(folder: Path, run: Path, record: dict[str, Any]) -> None:
    """The card of an export being built in `folder` (its export.json `record` so far)."""
    atomic_write_text(folder / CARD, render(run, record))


# --- what the card reads -------------------------------------------------------------------------


def evaluations(run: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{dataset: {strategy: figures}} of every evaluation in the run, datasets by name."""
    found = {}
    for path in sorted((run / runs.EVAL).glob(f"*/{runs.SUMMARY}")):
        try:
            found[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # being replaced right now: the next card has it
    return found


def base_licence(model: str) -> str | None:
    """The `license` field of the base model's own card: its local folder's README.md, or the hub
    card in the local cache (never fetched)."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.repocard import metadata_load

    card: Path | str | None = Path(model) / CARD
    if not Path(model).is_dir():
        try:
            card = try_to_load_from_cache(model, CARD)
        except ValueError:  # not a hub id
            card = None
    if not isinstance(card, (str, Path)) or not Path(card).is_file():
        return None
    return (metadata_load(Path(card)) or {}).get("license")


def data_record(run: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    """The training data's name and SHA-256 (a local file's; a hub dataset is named with its split),
    hashed once and kept in run.json, so later cards do not rehash a file that may have changed."""
    info = runs.read(run)
    if info.get("data"):
        return info["data"]
    data = recipe.get("data", {})
    source = data.get("train")
    if info.get("stage") == "dpo":  # DPO trains on preference pairs: its own file, or its SFT run's mined ones
        source = recipe["dpo"].get("pairs") or str(run.parent / str(info.get("parent")) / runs.PAIRS)
    record: dict[str, Any] = {"name": source, "sha256": None}
    path = Path(resources.resolve(source)) if source else None
    if path is not None and path.is_file():
        record["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    elif source:
        record["name"] = f"{source} ({data.get('subset') or 'default'}, {data.get('split')})"
    runs.note(run, data=record)
    return record


def _template_and_stops(run: Path) -> tuple[str | None, list[str]]:
    """The chat template the run's tokenizer renders, and the tokens generation stops at."""
    path = run / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    template = config.get("chat_template")
    if (run / "chat_template.jinja").is_file():
        template = (run / "chat_template.jinja").read_text(encoding="utf-8")
    stops = [t for t in (config.get("eos_token"), "<|im_end|>" if template and "<|im_end|>" in template else None) if t]
    return template, list(dict.fromkeys(stops))


# --- the card ------------------------------------------------------------------------------------


def metadata(run: Path, info: dict[str, Any], recipe: dict[str, Any], export: dict[str, Any] | None):
    """The YAML front matter, as huggingface_hub's ModelCardData (model-index from the evaluations)."""
    from huggingface_hub import EvalResult, ModelCardData

    model = info.get("base_model") or ""
    stage = info.get("stage")
    lora = recipe.get("lora")
    tags = ["fastmath", "math", "gsm8k", *([stage, "trl"] if stage in METHODS else [])]
    if lora:
        tags.append("qlora" if recipe["model"].get("load_in_4bit") else "lora")
    train = (recipe.get("data") or {}).get("train") or ""
    results = [
        EvalResult(
            task_type="text-generation",
            task_name="math word problems",
            dataset_type=HUB_DATASETS.get(name, name),
            dataset_name=name,
            dataset_split="test" if name in HUB_DATASETS else None,
            metric_type="accuracy",
            metric_value=s["accuracy"],
            metric_name=f"accuracy ({strategy}, n={s['n']})",
            metric_config=strategy,
        )  # fmt: skip
        for name, by_strategy in evaluations(run).items()
        for strategy, s in by_strategy.items()
    ]
    return ModelCardData(
        base_model=None if looks_like_path(model) else model,
        library_name=LIBRARY[(export or {}).get("format")] if stage in METHODS else "transformers",
        license=base_licence(model),
        datasets=[train] if train and not (looks_like_path(train) or train.startswith(resources.SCHEME)) else None,
        pipeline_tag="text-generation",
        tags=tags,
        model_name=run.name,
        eval_results=results or None,
    )


def render(run: Path, export: dict[str, Any] | None = None) -> str:
    """The whole card: front matter, then what a reader needs to trust, reproduce and load the model."""
    run = run.resolve()  # the card's commands work from any folder
    info, summary = runs.read(run), runs.read_summary(run)
    recipe = yaml.safe_load((run / runs.RECIPE).read_text(encoding="utf-8")) if (run / runs.RECIPE).is_file() else {}
    meta = metadata(run, info, recipe, export)
    sections = [
        f"# {run.name}",
        _about(run, info, summary, recipe, meta.license),
        _evaluation_table(run),
        _reproduce(run, info, recipe),
        _prompting(run),
        _loading(run, export),
    ]
    if recipe:
        sections.append("## Recipe\n\nThe keys this stage read (`recipe.yaml`):\n\n```yaml\n"
                        f"{yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)}```")  # fmt: skip
    return f"---\n{meta.to_yaml()}\n---\n\n" + "\n\n".join(s for s in sections if s) + "\n"


def _about(run: Path, info: dict[str, Any], summary: dict[str, Any], recipe: dict[str, Any], licence) -> str:
    stage = info.get("stage")
    lines = [f"- **Base model**: `{info.get('base_model')}` (licence: {licence or 'not stated in its card'})"]
    if stage not in METHODS:
        return "\n".join(["The base model as it is, evaluated by fastmath (no training).", "", *lines])
    lora, model = recipe.get("lora") or {}, recipe.get("model") or {}
    kind = "QLoRA (4-bit base weights)" if model.get("load_in_4bit") else "LoRA"
    lines.append(f"- **Method**: {METHODS[stage]} of a {kind} adapter: r={lora.get('r')}, alpha={lora.get('alpha')}, "
                 f"dropout={lora.get('dropout')}, on {', '.join(lora.get('target_modules') or [])}")  # fmt: skip
    if info.get("parent"):
        lines.append(f"- **Continues**: run `{info['parent']}`")
    data = data_record(run, recipe)
    size = summary.get("examples") or summary.get("pairs")
    digest = f"sha256 `{data['sha256']}`" if data["sha256"] else "a hub dataset: pin its revision to reproduce"
    lines.append(f"- **Data**: `{data['name']}`, {size if size is not None else '?'} examples used, {digest}")
    lines.append(f"- **Status**: {info.get('status')}" + (f" ({info['error']})" if info.get("error") else ""))
    if summary:
        minutes = (summary.get("wall_time_s") or 0) / 60
        where = f"{summary.get('hardware', 'unrecorded hardware')} x {summary.get('processes', 1)} process(es)"
        lines.append(f"- **Trained**: {summary.get('steps')} steps, {summary.get('epochs')} epochs, "
                     f"{summary.get('tokens')} tokens, {minutes:.1f} min on {where}, "
                     f"final loss {summary.get('final_loss')}")  # fmt: skip
        versions = summary.get("versions") or {}
        lines.append("- **Software**: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if summary.get("health"):
        h = summary["health"]
        lines.append(f"- **GRPO health**: {100 * h['clipped_fraction']:.0f}% of completions clipped at the "
                     f"length limit, {100 * h['zero_spread_fraction']:.0f}% of groups with zero reward spread "
                     "(means over the run)")  # fmt: skip
    return "\n".join(lines)


def _evaluation_table(run: Path) -> str:
    found = evaluations(run)
    if not found:
        return "## Evaluation\n\nNot evaluated yet: `python -m fastmath eval` adds its results here."
    lines = ["## Evaluation", "",
             "Greedy decoding unless the strategy samples; 95% Wilson intervals; n = problems.", "",
             "| dataset | strategy | accuracy (95% CI) | n | no answer | truncated | max new tokens |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, by_strategy in found.items():
        for strategy, s in by_strategy.items():
            lo, hi = s["ci95"]
            lines.append(
                f"| {name} | {strategy} | {100 * s['accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] | {s['n']} "
                f"| {100 * s['no_answer_rate']:.1f}% | {100 * s['truncation_rate']:.1f}% | {s.get('max_new_tokens')} |"
            )
    return "\n".join(lines)


SETTING_KEYS = ("seed", "max_new_tokens", "num_shots", "sc_samples", "temperature", "tot_breadth", "tot_depth",
                "tot_proposals")  # fmt: skip


def _reproduce(run: Path, info: dict[str, Any], recipe: dict[str, Any]) -> str:
    """The exact commands: the training stage from its recipe.yaml, and each evaluation with its settings."""
    commands = []
    stage = info.get("stage")
    if stage in METHODS:
        again = f"training.run_name={run.name}-again"
        commands.append(shlex.join(["python", "-m", "fastmath", stage, str(run / runs.RECIPE), again]))
    model = ["--lora", str(run)] if stage in METHODS else ["--model", str(info.get("base_model"))]
    for name, by_strategy in evaluations(run).items():
        for strategy, s in by_strategy.items():
            words = ["python", "-m", "fastmath", "eval", *model, "--dataset", name, "--strategies", strategy]
            words += ["--samples", str(s["samples"])] if s.get("samples") else []
            words += [f"eval.{k}={s[k]}" for k in SETTING_KEYS if k in s]
            commands.append(shlex.join(words))
    if not commands:
        return ""
    return "## Reproduce\n\n```bash\n" + "\n".join(commands) + "\n```"


def _prompting(run: Path) -> str:
    template, stops = _template_and_stops(run)
    if template is None:
        return ""
    system = runs.system_prompt(run) if (run / runs.RECIPE).is_file() else None
    return (
        "## Prompt format\n\nAsk as fastmath trained and evaluates: the tokenizer's chat template with "
        + (f"the system prompt `{system}`" if system else "fastmath's built-in system prompt")
        + f". Generation stops at: {', '.join(f'`{t}`' for t in stops) or 'the EOS token'}.\n\n"
        + f"```jinja\n{template.strip()}\n```"
    )


def _loading(run: Path, export: dict[str, Any] | None) -> str:
    export = export or {}
    if export.get("format") == "gguf":
        gguf = f"{run.name}-{export['quant']}.gguf"  # as export._gguf names it
        return (
            "## Use it\n\nllama.cpp, and Ollama (the Modelfile beside it carries the template, system prompt "
            "and stops):\n\n"
            f"```bash\nllama-cli -m {gguf} -cnv\nollama create {run.name} -f Modelfile && ollama run {run.name}\n```"
        )
    if export.get("format") == "merged":
        return (
            "## Use it\n\ntransformers (or vLLM), the adapter merged in:\n\n```python\n"
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
            'model = AutoModelForCausalLM.from_pretrained(".")\ntokenizer = AutoTokenizer.from_pretrained(".")\n```'
        )
    if not (run / runs.ADAPTER).is_file():
        return ""
    return (
        "## Use it\n\nWith PEFT (the base model is loaded from the adapter's config):\n\n```python\n"
        "from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer\n"
        f'model = AutoPeftModelForCausalLM.from_pretrained("{run}")\n'
        f'tokenizer = AutoTokenizer.from_pretrained("{run}")\n```\n\n'
        "Merged for transformers or vLLM, or as GGUF for llama.cpp and Ollama (with a Modelfile):\n\n"
        f"```bash\npython -m fastmath export {run} --format merged\n"
        f"python -m fastmath export {run} --format gguf --quant q8_0\n"
        f'python -m fastmath solve --lora {run} "Tom has 3 apples and buys 4 more. How many does he have?"\n```'
    )
