"""A tiny Qwen2-architecture model and tokenizer, built offline, saved like a hub model.

Why: nothing can be downloaded here (CI, a laptop on a train), yet the quickstart and tests
must run the real code path. The tokenizer is a byte-level BPE trained locally on the
project's sample data, with Qwen's special tokens and chat template, so everything that
loads "Qwen/Qwen2.5-7B-Instruct" loads this directory the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

from fastmath import resources
from fastmath.errors import FastmathError
from fastmath.export.pretokenizer import QWEN2_REGEX
from fastmath.log import log

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Qwen2.5-Instruct's template without the tool-calling branches.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _corpus() -> list[str]:
    """Text to learn merges from: the project's own sample problems and solutions."""
    texts = []
    samples = resources.package_dir() / "samples"
    for path in sorted(samples.glob("sample_*.json")):
        for record in json.loads(path.read_text(encoding="utf-8")):
            texts += [record["question"], record["answer"]]
    if not texts:
        raise FastmathError(f"no sample data in {samples} to train the tiny tokenizer on; reinstall fastmath")
    texts += ["The answer is 0123456789.", "答案是 0123456789。", "Let's think step by step."]
    return texts


def build_tokenizer(vocab_size: int = 2048):
    """Byte-level BPE with Qwen2's normalizer and pre-tokenizer, field for field as in Qwen2.5's tokenizer.json.

    transformers loads this directory (model_type qwen2) as Qwen2Tokenizer, which rebuilds Qwen2's
    pre-tokenizer whatever tokenizer.json says; training the merges under the same splitting keeps
    the file, what transformers runs and llama.cpp's "qwen2" pre-tokenizer in agreement (export checks
    it against the same reference before declaring it to llama.cpp). Any text, English or Chinese,
    encodes without unknowns.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        padding_side="right",
    )


def build_tiny_model(
    out_dir: str | Path,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vocab_size: int = 2048,
    seed: int = 0,
) -> Path:
    """Write a randomly initialised Qwen2ForCausalLM and its tokenizer to `out_dir`."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(vocab_size)
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 3,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    # LoRA leaves the tied embedding/head frozen; at the default 0.02 init its logits stay near
    # uniform (std ~0.2), so a trained adapter ranks tokens right but never gets confident.
    # A pretrained model's head is sharp; scale ours so logits can reach a useful range.
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 2.0 / hidden_size**0.5)
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad, do_sample=False)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def main(inv) -> int:
    a = inv.args
    path = build_tiny_model(
        a.out_dir, hidden_size=a.hidden_size, num_layers=a.layers, vocab_size=a.vocab_size, seed=a.seed
    )
    log.info(f"tiny model written to {path}")
    return 0
