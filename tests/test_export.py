"""Export end to end on the overfit tiny run: merged 16-bit, GGUF by llama.cpp's own converter, Ollama Modelfile.

Every export is made by `python -m fastmath export` in a real process, then read back by plain
transformers, by PyPI's gguf, by transformers' GGUF loader and, where llama-cpp-python is
installed, by llama.cpp itself, and compared with the run's adapter on its fp32 base, unmerged:
the model fastmath trained. The converter comes from fastmath's cache, as `make install` fills it.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fastmath import export, runs
from fastmath.data import load_problems
from fastmath.errors import FastmathError
from fastmath.export import converter, merge, modelfile, pretokenizer
from fastmath.prompts import SYSTEM_PROMPTS, chat_messages, prompt_text

from .conftest import GSM8K_TRAIN, fastmath_cli
from .eval.test_evaluate import copy_run
from .test_generation import single_thread  # noqa: F401 (autouse: one torch thread here too)

pytestmark = pytest.mark.slow

ENV = {"OMP_NUM_THREADS": "1"}
DECLARE = ("--pre-tokenizer", "qwen2")
NEW_TOKENS = 96
# q8_0 moves logits by up to ~0.7 on this model (f16: ~0.04), so its argmax may differ from the adapter's
# where the adapter's top two are close; it must agree wherever they are further apart than this.
CLEAR_MARGIN = 1.0
EOS = [2, 0]  # the tiny model's generation_config: <|im_end|>, <|endoftext|>


@pytest.fixture(scope="module")
def run(overfit_run, tmp_path_factory) -> Path:
    """A private copy of the overfit run, its recipe made QLoRA's (load_in_4bit): the export must still
    merge into the unquantized base."""
    run = copy_run(overfit_run, tmp_path_factory.mktemp("export-outputs") / overfit_run.name)
    _edit_recipe(run, model={"load_in_4bit": True})
    return run


def _edit_recipe(run: Path, **sections: dict) -> None:
    recipe = yaml.safe_load((run / runs.RECIPE).read_text(encoding="utf-8"))
    for section, keys in sections.items():
        recipe[section].update(keys)
    (run / runs.RECIPE).write_text(yaml.safe_dump(recipe), encoding="utf-8")


@pytest.fixture(scope="module")
def base(run) -> Path:
    return merge.base_dir(runs.model_settings(run))


@pytest.fixture(scope="module")
def exported(run):
    """`python -m fastmath export RUN --format F --quant Q [ARGS]`, made once per argument list: its folder."""
    made: dict[tuple[str, ...], Path] = {}

    def make(fmt: str, quant: str, *args: str) -> Path:
        key = (fmt, quant, *args)
        if key not in made:
            result = fastmath_cli("export", str(run), "--format", fmt, "--quant", quant, *args, env=ENV)
            assert result.returncode == 0, result.stderr[-3000:]
            made[key] = runs.export_dir(run, fmt, quant)
        return made[key]

    return make


@pytest.fixture(scope="module")
def gguf(exported, run):
    """The GGUF file of an export, the tiny tokenizer's pre-tokenizer declared as Qwen2's."""
    return lambda quant: exported("gguf", quant, *DECLARE) / f"{run.name}-{quant}.gguf"


@pytest.fixture(scope="module")
def adapter(run, base):
    """The run's adapter on its fp32 base, not merged: what every export is compared with."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(run)).eval()


@pytest.fixture(scope="module")
def merged_fp32(run, base):
    return merge.merged_model(run, base)


@pytest.fixture(scope="module")
def tokenizer(run):
    from fastmath.models import load_tokenizer

    return load_tokenizer(runs.model_settings(run))


@pytest.fixture(scope="module")
def prompts(tokenizer, shared_data) -> list[list[int]]:
    """Three memorised training problems, asked as fastmath's eval asks them: long, meaningful answers."""
    problems = load_problems(str(GSM8K_TRAIN), limit=3, verbose=False)
    return [tokenizer(prompt_text(tokenizer, chat_messages(p.question)))["input_ids"] for p in problems]


def greedy(model, ids: list[int]) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=EOS, pad_token_id=0
        )
    return out[0, len(ids) :].tolist()


@pytest.fixture(scope="module")
def adapter_answers(adapter, prompts) -> list[list[int]]:
    return [greedy(adapter, ids) for ids in prompts]


def logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def unclear_disagreements(reference: np.ndarray, other: np.ndarray, start: int) -> list[int]:
    """Positions from `start` where `reference`'s top token leads by over CLEAR_MARGIN and `other` picks another."""
    top2 = np.sort(reference[start:], axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > CLEAR_MARGIN
    differ = reference[start:].argmax(-1) != other[start:].argmax(-1)
    return [start + i for i in np.flatnonzero(clear & differ)]


# --- merged ---------------------------------------------------------------------------------------


def test_merged_fp32_logits_equal_the_adapters(adapter, merged_fp32, prompts):
    """(W + s*B*A) x against W x + s*B*(A x): the same sums in another order, so fp32 rounding only.
    Logits here reach about 20, fp32 keeps ~7 digits, and a layer sums hundreds of products:
    about 1e-5 per logit, 1e-4 at worst, measured 8e-5."""
    for ids in prompts:
        np.testing.assert_allclose(logits(merged_fp32, ids), logits(adapter, ids), atol=1e-4, rtol=1e-4)


def test_merged_export_is_the_fp32_merge_rounded_once_beside_the_bases_own_files(
    exported, run, base, merged_fp32, prompts, adapter_answers
):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    out = exported("merged", "bf16")
    # the weights: the fp32 merge in bf16, exactly; a QLoRA recipe merged into the unquantized base
    saved = load_file(out / "model.safetensors")
    fp32 = merged_fp32.state_dict()
    assert saved.keys() == {k for k in fp32 if k != "lm_head.weight"}  # tied to the embedding, as in the base
    for name, tensor in saved.items():
        assert tensor.dtype == torch.bfloat16 and torch.equal(tensor, fp32[name].to(torch.bfloat16)), name
    # every other file is the base's own, byte for byte, but config.json's dtype
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        assert (out / name).read_bytes() == (base / name).read_bytes(), name
    config, base_config = (json.loads((d / "config.json").read_text()) for d in (out, base))
    assert config == {**base_config, "dtype": "bfloat16"} and "quantization_config" not in config
    # plain transformers loads it, with the tokenizer, chat template and EOS ids of the base
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    assert GenerationConfig.from_pretrained(out).eos_token_id == EOS
    loaded = AutoTokenizer.from_pretrained(out)
    assert (loaded.eos_token, loaded.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert loaded.chat_template == AutoTokenizer.from_pretrained(base).chat_template
    # and answers as the adapter does (bf16 weights, computed in fp32)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert [greedy(model, ids) for ids in prompts] == adapter_answers
    record = json.loads((out / runs.EXPORT_JSON).read_text())
    assert (record["format"], record["quant"], record["parameters"]) == ("merged", "bf16", merged_fp32.num_parameters())
    assert record["files"] == {p.name: p.stat().st_size for p in out.iterdir() if p.name != runs.EXPORT_JSON}
    assert record["command"] == export.export_command(run, "merged", "bf16")


# --- GGUF -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_gguf_holds_every_tensor_and_the_tokenizer(gguf, quant, base, merged_fp32, tokenizer):
    import gguf as gguf_py
    from gguf import GGMLQuantizationType, GGUFReader

    path = gguf(quant)
    reader = GGUFReader(path)

    def field(key: str):
        return reader.get_field(key).contents()

    config = json.loads((base / "config.json").read_text())
    assert field("general.architecture") == "qwen2"
    assert field("tokenizer.ggml.pre") == "qwen2"
    assert (field("tokenizer.ggml.eos_token_id"), field("tokenizer.ggml.padding_token_id")) == (2, 0)
    assert field("tokenizer.ggml.tokens") == tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert field("tokenizer.chat_template") == tokenizer.chat_template
    # every tensor of the merge, under llama.cpp's name for it, with its values
    names = gguf_py.get_tensor_name_map(gguf_py.MODEL_ARCH.QWEN2, config["num_hidden_layers"])
    state = {k: v for k, v in merged_fp32.state_dict().items() if k != "lm_head.weight"}  # tied
    expected = {names.get_name(k, try_suffixes=(".weight", ".bias")): v for k, v in state.items()}
    tensors = {t.name: t for t in reader.tensors}
    assert tensors.keys() == expected.keys()
    two_d = GGMLQuantizationType.F16 if quant == "f16" else GGMLQuantizationType.Q8_0
    for name, t in tensors.items():
        want = expected[name].numpy()
        assert t.tensor_type == (two_d if want.ndim == 2 else GGMLQuantizationType.F32), name
        got = gguf_py.quants.dequantize(t.data, t.tensor_type).reshape(want.shape)
        if want.ndim == 1:
            np.testing.assert_array_equal(got, want, name)
        elif quant == "f16":  # rounded once, from the fp32 merge
            np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32), name)
        else:  # q8_0: blocks of 32 values on 255 steps: within a step of the tensor's largest value
            assert np.abs(got - want).max() <= np.abs(want).max() / 127, name
    record = json.loads((path.parent / runs.EXPORT_JSON).read_text())
    assert record["pre_tokenizer"] == {"pre_tokenizer": "qwen2", "declared": True}
    assert record["converter"]["sdist_sha256"] == converter.SDIST_SHA256


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_transformers_reads_the_gguf_and_answers_as_the_adapter(gguf, quant, adapter, prompts, adapter_answers):
    """f16: the same greedy answers. q8_0: the same argmax wherever the adapter is clear (CLEAR_MARGIN)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = gguf(quant)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    gguf_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for ids, answer in zip(prompts, adapter_answers, strict=True):
        assert gguf_tokenizer(gguf_tokenizer.decode(ids))["input_ids"] == ids
        if quant == "f16":
            assert greedy(model, ids) == answer
        else:
            path_ids = ids + answer
            assert unclear_disagreements(logits(adapter, path_ids), logits(model, path_ids), len(ids) - 1) == []


def test_llama_cpp_declared_pre_tokenizer_is_needed_and_said(run, exported):
    """Without the declaration the tiny tokenizer is refused (one line, nothing written); with it, said in the log."""
    before = _tree(run)
    message = _fails(str(run), "--format", "gguf", "--quant", "bf16", alone=False)
    assert "--pre-tokenizer qwen2" in message and _tree(run) == before
    log = (exported("gguf", "f16", *DECLARE) / "convert.log").read_text()
    assert "pre-tokenizer declared 'qwen2' and checked" in log


# --- Ollama ---------------------------------------------------------------------------------------


def test_modelfile_runs_the_gguf_as_fastmath_eval_asks(gguf, run, tokenizer):
    """TEMPLATE is Ollama's ChatML template, word for word: a constant, checked once against Ollama's
    own text/template with its `collate` (8 conversations, see the research notes). What varies per model
    is whether its Jinja template is ChatML; `modelfile.chatml` states what TEMPLATE renders under
    Ollama, and it must equal the model's template on fastmath's own prompts."""
    path = gguf("f16")
    text = (path.parent / "Modelfile").read_text()
    assert f"\nFROM ./{path.name}\n" in text
    assert f'\nTEMPLATE """{modelfile.CHATML_GO_TEMPLATE}"""\n' in text
    assert f'\nSYSTEM """{SYSTEM_PROMPTS["en"]}"""\n' in text  # the overfit run trained with the built-in prompt
    assert re.findall(r'^PARAMETER stop "(.*)"$', text, re.M) == ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
    parameters = dict(re.findall(r"^PARAMETER (?!stop)(\w+) (\S+)$", text, re.M))
    assert parameters == {"temperature": "0", "repeat_penalty": "1", "num_ctx": "4096", "num_predict": "512"}
    conversations = [
        chat_messages("Natalia sold 48 clips in April. How many in May?"),
        chat_messages("小明有 3 个苹果，又买了 5 个。他现在有几个？"),
        [*chat_messages("What is 2+3?"), {"role": "assistant", "content": "5"}, {"role": "user", "content": "And 4?"}],
    ]
    for messages in conversations:
        assert modelfile.chatml(messages) == prompt_text(tokenizer, messages)


def test_modelfile_takes_the_runs_own_prompt_and_refuses_what_is_not_chatml(run, tokenizer, tmp_path):
    own = copy_run(run, tmp_path / "own")
    _edit_recipe(own, data={"system_prompt": "Answer with a number."})
    assert modelfile.system_prompt(own) == "Answer with a number."
    chinese = copy_run(run, tmp_path / "zh")
    _edit_recipe(chinese, data={"language": "zh"})
    assert modelfile.system_prompt(chinese) == SYSTEM_PROMPTS["zh"]
    assert modelfile.speaks_chatml(tokenizer)
    llama3 = tokenizer.chat_template.replace("<|im_start|>", "<|start_header_id|>")
    with _swapped(tokenizer, "chat_template", llama3):
        assert not modelfile.speaks_chatml(tokenizer)


@contextlib.contextmanager
def _swapped(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


# --- llama.cpp itself (llama-cpp-python installed) --------------------------------------------------


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_llama_cpp_answers_as_the_adapter(gguf, quant, adapter, prompts, adapter_answers):
    """llama.cpp's own tokenizer and forward pass: f16 gives the adapter's greedy answers; q8_0 its argmax
    wherever the adapter is clear."""
    llama_cpp = pytest.importorskip("llama_cpp")
    params = {"n_ctx": 1024, "n_threads": 1, "logits_all": True, "verbose": False}
    with contextlib.closing(llama_cpp.Llama(model_path=str(gguf(quant)), **params)) as llm:
        for ids, answer in zip(prompts, adapter_answers, strict=True):
            text = llm.detokenize(ids, special=True)
            assert llm.tokenize(text, add_bos=False, special=True) == ids
            if quant == "f16":
                assert _llama_greedy(llm, ids, len(answer)) == answer
            else:
                path_ids = ids + answer
                llm.reset()
                llm.eval(path_ids)
                ours = np.array(llm.scores[: len(path_ids)])
                assert unclear_disagreements(logits(adapter, path_ids), ours, len(ids) - 1) == []


def _llama_greedy(llm, ids: list[int], limit: int) -> list[int]:
    llm.reset()
    llm.eval(ids)
    out: list[int] = []
    while len(out) < limit:
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        if out[-1] in EOS:
            break
        llm.eval([out[-1]])
    return out


def test_k_quants_by_llama_cpps_quantizer(run, exported):
    llama_cpp = pytest.importorskip("llama_cpp")
    from gguf import GGUFReader, LlamaFileType

    folder = exported("gguf", "q4_k_m", *DECLARE)
    path = folder / f"{run.name}-q4_k_m.gguf"
    assert GGUFReader(path).get_field("general.file_type").contents() == LlamaFileType.MOSTLY_Q4_K_M
    assert json.loads((folder / runs.EXPORT_JSON).read_text())["quantizer"]["llama_cpp_python"]
    with contextlib.closing(llama_cpp.Llama(model_path=str(path), n_threads=1, verbose=False)) as llm:
        assert llm.n_vocab() == 2048


# --- refusals: one line, exit 2, nothing written --------------------------------------------------


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


def _fails(*args: str, alone: bool = True) -> str:
    """`python -m fastmath export ARGS` must exit 2 with one `error:` line, and no traceback; `alone`:
    nothing else either (it failed before loading anything)."""
    result = fastmath_cli("export", *args, env=ENV)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], result.stderr[-3000:]
    assert len(lines) == 1 or not alone, result.stderr[-3000:]
    return lines[-1]


def test_refusals_before_anything_is_loaded(run, tiny_model, tmp_path):
    before = _tree(run)
    base_run = runs.base_run(tmp_path, str(tiny_model))
    assert "holds no adapter" in _fails(str(base_run), "--format", "merged")
    assert "--quant 'q3_zz' is not supported for --format gguf" in _fails(
        str(run), "--format", "gguf", "--quant", "q3_zz"
    )
    assert "use one of bf16, f16" in _fails(str(run), "--format", "merged", "--quant", "q8_0")
    assert "--format 'onnx' is not supported" in _fails(str(run), "--format", "onnx")
    assert "--pre-tokenizer 'llama3' is not supported" in _fails(str(run), "--format", "gguf", *DECLARE[:1], "llama3")
    moved = copy_run(run, tmp_path / "moved")
    shutil.rmtree(moved / runs.EXPORTS, ignore_errors=True)
    _edit_recipe(moved, model={"name": str(tmp_path / "no-such-model")})
    assert re.search("base model: .*no-such-model.* does not exist", _fails(str(moved), "--format", "merged"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    message = _fails(str(run), "--format", "merged", "--output", str(busy), "--force")
    assert "holds no fastmath export" in message and [p.name for p in busy.iterdir()] == ["notes.txt"]
    assert _tree(run) == before
    if converter.quantizer() is None:
        assert "needs llama.cpp's quantizer" in _fails(str(run), "--format", "gguf", "--quant", "q4_k_m")


def test_an_earlier_export_is_replaced_only_with_force(run, exported):
    out = exported("merged", "bf16")
    before = _tree(out)
    assert "already holds an export; pass --force" in _fails(str(run), "--format", "merged", "--quant", "bf16")
    assert _tree(out) == before
    first = json.loads((out / runs.EXPORT_JSON).read_text())
    result = fastmath_cli("export", str(run), "--format", "merged", "--quant", "bf16", "--force", env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    again = json.loads((out / runs.EXPORT_JSON).read_text())
    assert again["files"] == first["files"] and again["command"].endswith("--force")
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no staging left behind


@contextlib.contextmanager
def _tmpfs(where: Path, size: int):
    """A real small disk: a tmpfs of `size` bytes mounted at `where` (root only)."""
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_full_disk_is_refused_before_writing_and_the_estimate_is_enough(run, base, tmp_path):
    """The free-space check against real small disks: one too small (refused, nothing written), and one
    exactly as large as the estimate for a q8_0 GGUF, the largest intermediate per output byte (it fits)."""
    with _tmpfs(tmp_path / "small", 512 * 1024) as disk:
        message = _fails(str(run), "--format", "merged", "--output", str(disk / "export"))
        assert "not enough disk space" in message and list(disk.iterdir()) == []
    base_files = sum((base / f).stat().st_size for f in merge.BASE_FILES if (base / f).is_file())
    need = export.peak_bytes(merge.parameter_count(base), "gguf", "q8_0", base_files)
    with _tmpfs(tmp_path / "exact", need) as disk:
        result = fastmath_cli("export", str(run), "--format", "gguf", "--quant", "q8_0", *DECLARE,
                              "--output", str(disk / "export"), env=ENV)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert [p.name for p in disk.iterdir()] == ["export"]


# --- the pieces -----------------------------------------------------------------------------------


def test_the_qwen2_reference_is_transformers_own_and_the_check_catches_real_mismatches(base):
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    assert pretokenizer.QWEN2_REGEX == PRETOKENIZE_REGEX
    tiny = json.loads((base / "tokenizer.json").read_text())
    pretokenizer.check(tiny, "qwen2")
    offsets_only = json.loads(json.dumps(tiny).replace('"trim_offsets": false', '"trim_offsets": true'))
    pretokenizer.check(offsets_only, "qwen2")
    gpt2_byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    gpt2 = {**tiny, "normalizer": None, "pre_tokenizer": gpt2_byte_level}  # the tiny tokenizer before this change
    llama3 = json.loads(json.dumps(tiny).replace(r"\\p{N}|", r"\\p{N}{1,3}|"))
    assert llama3 != tiny
    for wrong in (gpt2, llama3, {**tiny, "normalizer": None}):
        with pytest.raises(FastmathError, match="does not pre-tokenize like qwen2"):
            pretokenizer.check(wrong, "qwen2")


def test_the_converter_comes_whole_from_the_pinned_sdist_or_not_at_all(tmp_path):
    folder = converter.fetch()  # the cache make install fills
    manifest = json.loads((folder / converter.MANIFEST).read_text())
    assert manifest["sdist_sha256"] == converter.SDIST_SHA256 and "convert_hf_to_gguf.py" in manifest["files"]
    fake = tmp_path / converter.SDIST
    fake.write_bytes(b"not llama-cpp-python")
    with pytest.raises(FastmathError, match=f"not llama-cpp-python {converter.LLAMA_CPP_PYTHON}'s"):
        converter.fetch(cache=tmp_path / "cache", sdist=fake)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []


# --- the app --------------------------------------------------------------------------------------


def test_run_page_shows_the_export_command_and_the_exports(monkeypatch, run, exported, gguf):
    from fastmath.app import jobs

    from .app.test_app import open_app

    exported("merged", "bf16")
    gguf("f16")
    at = open_app(monkeypatch, run.parent, "run")
    (command,) = [c.value for c in at.code if "fastmath export" in c.value]
    plan = jobs.export_plan(run.parent, run.name, export.FORMATS[0])  # what its Export button runs
    assert command == plan.shell and command.endswith(f"--format {export.FORMATS[0]} --quant bf16 --force")
    (table,) = [d.value for d in at.dataframe if "folder" in d.value]
    assert {"merged-bf16", "gguf-f16"} <= {Path(p).name for p in table["folder"]}
    assert table.set_index("folder").loc[str(runs.export_dir(run, "gguf", "f16")), "quant"] == "f16"


def test_every_export_carries_the_runs_model_card(exported, gguf, run):
    from huggingface_hub import ModelCard

    for out, library, use in (
        (exported("merged", "bf16"), "transformers", "AutoModelForCausalLM.from_pretrained"),
        (gguf("q8_0").parent, "gguf", f"llama-cli -m {run.name}-q8_0.gguf"),
    ):
        card = ModelCard.load(out / "README.md")  # parsed offline, as the hub would
        assert card.data.library_name == library and "qlora" in card.data.tags, out
        assert use in card.text and "QLoRA (4-bit base weights)" in card.text
        record = json.loads((out / runs.EXPORT_JSON).read_text())
        assert record["files"]["README.md"] == (out / "README.md").stat().st_size, "listed with the export's files"
