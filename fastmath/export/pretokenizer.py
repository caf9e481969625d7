"""Which BPE pre-tokenizer a tokenizer uses, checked against a published reference rather than trusted.

llama.cpp's converter names a tokenizer's pre-tokenizer (how text is split before BPE; it must
match at inference) by hashing the *token ids* its tokenizer gives for a fixed text. The ids
depend on the vocabulary, so a tokenizer with a home-trained vocabulary, like fastmath's tiny
model, is never recognised even when it splits text exactly like Qwen2. Such a tokenizer can be
*declared* (`--pre-tokenizer qwen2`), and the declaration holds only if its normalizer and
pre-tokenizer equal the reference here, field for field and piece for piece on probe texts. A
real mismatch (GPT-2's regex, digits grouped 1-3, a missing NFC) still stops the export.

The reference is Qwen/Qwen2.5-*'s published tokenizer.json. The regex is also transformers'
`Qwen2Tokenizer.PRETOKENIZE_REGEX` (a test checks) and llama.cpp's LLAMA_VOCAB_PRE_TYPE_QWEN2.
`fastmath.tiny` builds its tokenizer from it, so the tiny model splits text as Qwen2 does.
"""

from __future__ import annotations

import copy
import json

from fastmath.errors import FastmathError

QWEN2_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

REFERENCE = {
    "qwen2": {
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": QWEN2_REGEX}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            ],
        },
        # llama.cpp's BPE has no byte fallback and always applies merges (ignore_merges is llama3's only)
        "model": {"type": "BPE", "byte_fallback": False, "ignore_merges": False},
    },
}
DECLARABLE = tuple(sorted(REFERENCE))

# Fields that change offsets only, never the pieces or the ids.
_OFFSET_ONLY = {"trim_offsets"}

# Probes beside the converter's own check text: digits, contractions in capitals, CRLF, tabs, CJK, NFC.
PROBES = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "<<48/2=24>>24\n#### 72",
    "I'LL say it's 3.14159 -- isn't it?\r\n\r\n   done  ",
    "答案是 0123456789。\tCafé naïve Å Å",  # "Å" written as A + combining ring must compose under NFC
)


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in _OFFSET_ONLY}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _pieces(tok, text: str) -> list[str]:
    """What the BPE model sees: the normalised, pre-tokenized pieces (independent of the vocabulary)."""
    if tok.normalizer is not None:
        text = tok.normalizer.normalize_str(text)
    if tok.pre_tokenizer is None:
        return [text]
    return [piece for piece, _ in tok.pre_tokenizer.pre_tokenize_str(text)]


def check(tokenizer_json: dict, name: str, check_text: str = "") -> None:
    """Raise FastmathError unless `tokenizer_json` (a parsed tokenizer.json) splits text exactly like `name`."""
    from tokenizers import Tokenizer

    if name not in REFERENCE:
        raise FastmathError(f"no reference for pre-tokenizer {name!r}; fastmath can check {', '.join(DECLARABLE)}")
    ref: dict = REFERENCE[name]
    problems = [
        f"{part} is {json.dumps(tokenizer_json.get(part))}, {name}'s is {json.dumps(ref[part])}"
        for part in ("normalizer", "pre_tokenizer")
        if _strip(tokenizer_json.get(part)) != _strip(ref[part])
    ]
    model = tokenizer_json.get("model") or {}
    for key, want in ref["model"].items():
        if model.get(key, False if isinstance(want, bool) else None) != want:
            problems.append(f"model.{key} is {model.get(key)!r}, {name}'s is {want!r}")
    if not problems:  # the same fields must also behave the same: the pieces, on every probe
        reference = copy.deepcopy(tokenizer_json)
        reference["normalizer"], reference["pre_tokenizer"] = ref["normalizer"], ref["pre_tokenizer"]
        ours, theirs = Tokenizer.from_str(json.dumps(tokenizer_json)), Tokenizer.from_str(json.dumps(reference))
        problems += [
            f"it splits {text[:40]!r} differently"
            for text in (check_text, *PROBES)
            if _pieces(ours, text) != _pieces(theirs, text)
        ]
    if problems:
        raise FastmathError(
            f"the tokenizer does not pre-tokenize like {name}, so llama.cpp would tokenize differently from "
            f"transformers: {'; '.join(problems)}"
        )
