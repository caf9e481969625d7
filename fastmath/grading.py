"""Grade math completions: find the number the model meant and compare it with the gold answer.

Public harnesses get GSM8K wrong in known ways: lm-evaluation-harness's strict match takes the
FIRST `####` (a model that recites the few-shot exemplars scores ~0), its flexible match marks
`$29.00` wrong against `29`, and "the last number" is fooled by a model that runs on into an
invented next question. Here, in order:

1. cut the completion where the model starts a new question (`truncate_at_new_question`);
2. take the last explicit answer of the strongest kind present: `\\boxed{}` > `#### N` > answer
   phrases ("The answer is N", "答案是 N", a bare "Answer: N" line). At these answer positions, and
   only there, numbers in words count too ("The answer is twelve", "答案是十八", "3万"), and a list
   ("The answer is 1, 2, 3") is no single answer: the completion gets none;
3. otherwise take the last number written in digits (words are not read here: "one of them");
4. compare values as exact fractions (`numbers_equal`): `$1,000.00` == `1000`, `3/4` == `0.75`.

Completions are untrusted text (a program's output, a model in a loop), so grading never raises on
one and stays linear in its length: every pattern is run over the text once, numbers, sentence
ends and `=` signs are indexed once, and each answer marker is then read by binary search in those
indexes. A number longer than `_MAX_DIGITS` digits is kept as its normalised text (no int from it,
whatever the interpreter's int/str digit limit) and equals only the same digits.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Literal

from fastmath.errors import FastmathError
from fastmath.io import atomic_write_jsonl

_FINAL_LINES = {"en": "The answer is {}.", "zh": "答案是 {}。"}

# Numbers with more digits than this are compared as normalised text. Every int built here then
# stays near 400 digits (a mixed fraction of such parts, a scale word), under 640, the lowest
# int/str limit Python lets a process set, so no conversion can fail whatever the process chose.
_MAX_DIGITS = 200
_MAX_STR_BITS = 2000  # about 600 digits: longer exact decimals are written p/q instead
_MAX_GOLD_EXPONENT = 10_000  # a JSON gold like 1e-05 is spelled out; 1e99999 is refused

Value = Fraction | str  # str: a number too long to convert, as normalised text ("-1000…", "12.5…")


class _List:
    """The answer named several numbers ("1, 2 or 3", "答案是3、4"): none of them is the answer."""


_LIST = _List()

# Full-width digits and punctuation (common in Chinese output) and look-alike signs, mapped to
# ASCII one character for one. `，` becomes `,` so `1，000` reads as a thousand; `。` stays: it
# ends a sentence, it is not a decimal point.
_CHAR_MAP = str.maketrans(
    {chr(0xFF10 + i): str(i) for i in range(10)}
    | {"．": ".", "，": ",", "：": ":", "＝": "=", "＋": "+", "／": "/", "％": "%", "＄": "$"}
    | {"−": "-", "－": "-"}
)
# Typographic thousands separators: LaTeX `1{,}000` / `1\,000`, thin and no-break spaces. A plain
# space is not one: `1 000` is too easily a list or a mixed number (`1 1/2`).
_THOUSANDS_MARK = re.compile(r"(?<=\d)(?:\{,\}|\\,|[\u00a0\u2009\u202f])(?=\d{3}(?!\d))")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")
# One way only to split a run of digits (no `[\d,]*\.?\d+`), so a failed match backtracks linearly.
_FRAC_PART = r"(-?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+))"
_LATEX_FRAC = re.compile(rf"\\[dt]?frac\s*\{{\s*{_FRAC_PART}\s*\}}\s*\{{\s*{_FRAC_PART}\s*\}}")
# `18 dollars and 50 cents`, `$18 and 50 cents` are one amount, 18.50, not a list of two numbers.
_DOLLARS_CENTS = re.compile(
    r"(?:\$(\d+)|\b(\d+)[ \t]*dollars?)[ \t]*(?:,[ \t]*)?(?:and[ \t]+)?(\d{1,2})[ \t]*cents?\b", re.I
)

# One number as people write it: `-5`, `$-5`, `-$5`, `$1,234.50`, `.5`, `3/4`, `1 1/2`, `¥18`.
# A `-` glued to a digit, letter or closing bracket before it is subtraction (`16-3`), not a sign.
# Commas separate thousands only in groups of three, so `3,4` in a list is two numbers; each group
# checks that no digit follows it, so a long `1,000,000,…` never backtracks.
_NUMBER = re.compile(
    r"(?P<neg>(?<![0-9A-Za-z)\]}])-)?"
    r"(?:[$¥￥€£]\s?(?P<neg2>-)?)?"
    r"(?:(?P<whole>\d+) (?=\d+/\d))?"
    r"(?P<num>\d{1,3}(?:,\d{3}(?!\d))+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:\s?/\s?(?P<den>\d+(?:\.\d+)?))?"
)
_DIGIT = re.compile(r"[0-9０-９]")
# After an answer's first number, an operator and another number mean an expression (`5 + 3 = 8`).
_OPERATOR = re.compile(r"\s*(?:[-+*/×÷·xX]|\\times|\\cdot|\\div)\s*(?:[$(]\s*)?\d")
_EQUALS = re.compile("=")
# A sentence ends at a newline, `。`, `;`, `!`, `?` or a period that is not a decimal point.
_SENTENCE_END = re.compile(r"\n|[。；;!?！？]|\.(?!\d)")
_LEADING = re.compile(r"[\s:=]*")
# What may follow the number of a bare `Answer: N` line: a short unit, no digits, no `=`.
_UNIT_TAIL = re.compile(r"[^\d=\n]{0,40}")
# Between the numbers of a list: `1, 2`, `1,2`, `2, 4 or 6`, `1 and 2`, `3、4`, `5 6`. Words (`18
# dollars and 50 cents`, `90 minutes, or 1.5 hours`) or an operator (`5 + 3`) make it no list.
_LIST_SEP = re.compile(r"%?(?:[ \t]*(?:[,;、&和或与及]|(?:and|or)\b)[ \t]*(?:(?:and|or)\b[ \t]*)?|[ \t]+)", re.I)
_AND = re.compile(r"[ \t]+and[ \t]+", re.I)  # `2 and 1/2`: a mixed number, not a list

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"[{}]")
# `#### N` with the number right after it; `#### Step 1` and `#### 2. Cost` are markdown headings.
_HASHES = re.compile(r"(?<!#)####(?!#)[ \t]*")
_HEADING_AFTER_NUMBER = re.compile(r"[.:)][ \t]*\S")
# Answer phrases, in one pattern so occurrences come out in text order. `strong` takes the first
# number after it; `weak` ("Answer:", "A:", "答："), which also starts worked solutions in few-shot
# formats, counts only when the number comes first and nothing but a unit follows it.
_PHRASES = re.compile(
    r"(?P<strong>(?i:\b(?:final\s+)?answer\s+(?:is|would\s+be|will\s+be|should\s+be)\b|\bfinal\s+answer\b)"
    r"|答案\s*(?:是(?!否)|为|為|应该是|应为|應為|[:：]))"
    r"|(?P<weak>(?i:\b(?:answer|ans|a)\s*[:：])|答\s*[:：])"
)
# Every answer marker, for `truncate_at_new_question` to see an answer given in words.
_MARKERS = re.compile(rf"{_PHRASES.pattern}|{_BOXED.pattern}|{_HASHES.pattern}")
_MARKER_LEADING = re.compile(r"[\s:=*]*")

# A line where the model starts a new question or turn; special tokens cut wherever they are.
_NEW_QUESTION = re.compile(
    r"<\|(?:im_start|im_end|endoftext|eot_id|start_header_id)\|>|</s>"
    r"|^[ \t]*(?:#{1,4}[ \t]*)?(?:\*\*)?"
    r"(?:(?i:question|problem|q|human|user|instruction)(?:[ \t]*\d+)?|问题|题目|问)"
    r"(?:\*\*)?[ \t]*[:：]",
    re.MULTILINE,
)

# Numbers in words, read only at answer positions. English: cardinals up to the trillions,
# `and` after hundred/thousand (`one hundred and five`), `a hundred`, `a dozen`, `three point five`,
# simple fractions (`two thirds`, `two and a half`). A lone `half` is not read: half of what?
_EN_SMALL = {
    word: i
    for i, word in enumerate(
        ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
        + ("thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
    )
}
_EN_TENS = {
    word: 10 * i
    for i, word in enumerate(("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"), 2)
}
_EN_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_EN_DENOMINATORS = {"half": 2, "halves": 2, "third": 3, "thirds": 3, "quarter": 4, "quarters": 4} | {
    word + plural: d
    for d, word in enumerate(("fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"), 4)
    for plural in ("", "s")
}
_EN_WORDS = (
    _EN_SMALL.keys()
    | _EN_TENS.keys()
    | _EN_SCALES.keys()
    | _EN_DENOMINATORS.keys()
    | {"a", "and", "hundred", "dozen", "point", "negative", "minus"}
)
_EN_AFTER_A = {"hundred", "dozen"} | _EN_SCALES.keys() | _EN_DENOMINATORS.keys()  # a hundred, a dozen, a half
_EN_AFTER_AND = _EN_TENS.keys() | _EN_SMALL.keys() - {"zero"}  # one hundred and five
_EN_WORD = re.compile(r"(?:[ \t]+|[ \t]*-[ \t]*)?([A-Za-z]{1,12})(?![A-Za-z])")
# `one` as a pronoun ("the answer is one that ...") is not the number 1.
_EN_PRONOUN_NEXT = {"that", "which", "where", "who", "whom", "whose"}
# A digit number followed by a scale word (`1.5 million`, `2 dozen`).
_SCALE_AFTER = re.compile(r"[ \t]*(hundred|thousand|million|billion|trillion|dozen)(?![A-Za-z])", re.I)
_SCALE_WORDS = {"hundred": 100, "dozen": 12} | _EN_SCALES

# Chinese: 十八, 三百五十, 两千三百, 一百零五, 一万, 两百五 (= 250), 三分之一, 百分之五十, 三点五, 负五,
# and digits before a unit (3万, 2.5亿, 3万5千). No digit-by-digit reading (二〇二三).
_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "兩": 2, "三": 3, "四": 4}
_ZH_DIGITS |= {"五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_SMALL_UNITS = {"十": 10, "百": 100, "千": 1000}
_ZH_BIG_UNITS = {"万": 10**4, "萬": 10**4, "亿": 10**8, "億": 10**8}
_ZH_UNITS = _ZH_SMALL_UNITS.keys() | _ZH_BIG_UNITS.keys()
_ZH_START = _ZH_DIGITS.keys() | {"十", "负", "百"}
_ZH_MEASURE = re.compile("千[米克瓦卡焦]")  # 千米 is a kilometre, not a thousand metres
_ASCII_INTEGER = re.compile(r"[0-9]{1,20}(?![0-9])")
_ZH_DECIMALS = re.compile(f"点([{''.join(_ZH_DIGITS)}]+)")
# What may follow a Chinese numeral: no Chinese character (一共, 一样 are words, not 1), or a
# measure word or unit (十八个, 3万元, 十分钟); 十分 before a word is "very", not ten minutes.
_ZH_AFTER = re.compile(
    r"(?![\u3007\u3400-\u9fff])|分(?:钟|(?![\u3007\u3400-\u9fff]))|千[米克瓦卡焦]"
    r"|[个只元块人名位辆本天年月日号周岁次件条头匹张支枝页颗粒瓶箱盒包杯碗双对份袋层座棵株朵把枚场套片台架间所"
    r"家道题门节倍章首篇封组批群队班排行列步圈趟遍回桶壶罐筐篮车船盘碟勺斤磅吨克米升度秒时小美英公平立厘毫刻钟]"
)
# After a weak marker or `####`, a number in words is the answer only when at most one unit word
# follows it ("Answer: twelve apples", "答：六辆车"): "A: Two trains leave ..." starts a solution.
_WORD_TAIL = re.compile(r"[ \t]*(?:(?:[A-Za-z]{1,20}|[\u3400-\u9fff]{1,3})[ \t]*)?")


def final_answer_line(value: str, lang: str) -> str:
    """The one final-answer line that SFT targets end with and the grader reads back."""
    try:
        template = _FINAL_LINES[lang]
    except KeyError:
        raise FastmathError(f"unknown language {lang!r}: expected one of {', '.join(_FINAL_LINES)}") from None
    return template.format(value.strip())


def final_line_answer(completion: str, lang: str) -> str | None:
    """The number on the completion's last line when that line is the final-answer line SFT teaches
    ("The answer is N." / "答案是 N。"), else None: what GRPO's format reward checks."""
    lines = [line.strip() for line in completion.strip().splitlines() if line.strip()]
    prefix, _, suffix = _FINAL_LINES[lang].partition("{}")
    if not lines or not lines[-1].startswith(prefix.rstrip()) or not lines[-1].endswith(suffix):
        return None
    try:
        return gold_from_answer(lines[-1][len(prefix.rstrip()) : len(lines[-1]) - len(suffix)])
    except FastmathError:  # no number, or several
        return None


def _normalize(text: str) -> str:
    """ASCII digits and signs, no markdown bold or simple LaTeX wrappers around numbers.

    GSM8K's calculator annotations (`= <<9*2=18>>18`) stay: they only repeat a result, and a
    completion cut off right after one (`9 * 2 = <<9*2=18>>`) still ends with its value.
    """
    text = text.translate(_CHAR_MAP).replace("**", "").replace("\\$", "$").replace("\\%", "%")
    text = _THOUSANDS_MARK.sub(",", text)
    text = _LATEX_TEXT.sub(r" \1 ", text)
    text = _LATEX_FRAC.sub(_frac_to_slash, text)
    return _DOLLARS_CENTS.sub(lambda m: f"${m[1] or m[2]}.{m[3]:0>2}", text)


def _frac_to_slash(m: re.Match[str]) -> str:
    """`\\frac{3}{4}` -> `3/4`; after a digit, `2\\frac{1}{2}` -> `2 1/2`, the mixed number, not 21/2."""
    space = " " if m.string[m.start() - 1 : m.start()].isdigit() else ""
    return f"{space}{m[1]}/{m[2]}"


def _decimal_text(written: str) -> str:
    """A written decimal without separators or padding zeros: `0,012.50` -> `12.5`."""
    whole, _, frac = written.replace(",", "").partition(".")
    whole, frac = whole.lstrip("0") or "0", frac.rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def _decimal(written: str) -> Value:
    """The exact value of a written decimal; past `_MAX_DIGITS` digits, its normalised text."""
    text = _decimal_text(written)
    whole, _, frac = text.partition(".")
    if len(whole) + len(frac) > _MAX_DIGITS:
        return text
    return Fraction(int(whole + frac), 10 ** len(frac))


def _negate(value: Value) -> Value:
    """Minus `value`, also one kept as text."""
    return f"-{value}" if isinstance(value, str) else -value


def _value(m: re.Match[str]) -> Value | None:
    """The exact value of a `_NUMBER` match; None for a zero denominator."""
    value = _decimal(m["num"])
    if m["den"] is not None:
        den = _decimal(m["den"])
        if den == 0:
            return None
        whole = None if m["whole"] is None else _decimal(m["whole"])
        if isinstance(value, str) or isinstance(den, str) or isinstance(whole, str):
            mixed = "" if m["whole"] is None else f"{_decimal_text(m['whole'])} "
            value = f"{mixed}{_decimal_text(m['num'])}/{_decimal_text(m['den'])}"
        # `1 1/2` is a mixed number only when the fraction is proper; `8 16/2` is not.
        elif whole is not None and value < den:
            value = value / den + whole
        else:
            value = value / den
    return _negate(value) if m["neg"] or m["neg2"] else value


def _canonical(x: Value) -> str:
    """`18`, `0.75`, `-2.5`: an exact decimal when one exists, else `p/q` (`1/3`); long numbers as written."""
    if isinstance(x, str):
        return x
    if x.denominator == 1:
        return str(x.numerator)
    rest, twos, fives = x.denominator, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    places = max(twos, fives)
    scaled = abs(x.numerator) * 10**places // x.denominator if rest == 1 else None
    if scaled is None or scaled.bit_length() > _MAX_STR_BITS:
        return f"{x.numerator}/{x.denominator}"
    digits = str(scaled).rjust(places + 1, "0")
    return f"{'-' if x < 0 else ''}{digits[:-places]}.{digits[-places:]}"


def _parse(text: str) -> tuple[Value, int] | None:
    """The first number in `text` and how many decimal places it was written with."""
    for m in _NUMBER.finditer(_normalize(text)):
        value = _value(m)
        if value is not None:
            places = len(m["num"].partition(".")[2]) if m["den"] is None else 0
            return value, places
    return None


def numbers_equal(a: str, b: str, tolerance: float = 0.0) -> bool:
    """Whether two number strings have the same value (`18.00` == `18`, `3/4` == `0.75`).

    Exact, except that a decimal written with 4 or more places is read as a rounding: it matches
    a value within one unit of its last place (`0.3333` == `1/3`, `17.99999` == `18`). Short
    decimals stay exact, so `0.33` is not `1/3` and `18.5` is not `18`. A non-number is never equal.
    Numbers past `_MAX_DIGITS` digits are equal only when they normalise to the same text.
    `tolerance` (relative, a task's: GSM-Hard's golds are Python floats, `3244047.0999999996` for
    3244047.1) also accepts values within `tolerance` x the larger magnitude.
    """
    x, y = _parse(a), _parse(b)
    if x is None or y is None:
        return False
    if x[0] == y[0]:
        return True
    if isinstance(x[0], str) or isinstance(y[0], str):
        return False
    if tolerance and abs(x[0] - y[0]) <= Fraction(tolerance) * max(abs(x[0]), abs(y[0])):
        return True
    long_places = [p for p in (x[1], y[1]) if p >= 4]
    return bool(long_places) and abs(x[0] - y[0]) <= Fraction(1, 10 ** min(long_places))


# Golds as Chinese workbooks write them: `(3/4)` is 3/4 and `4(5/11)` the mixed number 4 + 5/11.
_GOLD_BRACKETED = re.compile(r"\s*(-?\d+)?\s*\(\s*(\d+\s*/\s*\d+)\s*\)\s*")


def gold_from_answer(answer: str) -> str:
    """The canonical gold number from a bare number (`1,000`) or GSM8K text ending `#### N`.

    After `####` the first number counts (the LAST `####`, as a reference may quote one earlier);
    without `####` the text must hold exactly one number, so a solution passed by mistake fails loudly.
    Bare golds may be integers, decimals, `1,000`, `-5`, `3/4`, `(3/4)`, `4(5/11)` or `150%`. A
    percent gold is the number before `%` (150): the grader reads `150%` in a completion as 150, so
    gold and answer are read alike, and a question that asks "what percent" is answered by 150, not
    by 1.5. Golds are digits: a gold in words is a data error, reported like any other.
    """
    if "####" in answer:
        parsed = _parse(answer.rsplit("####", 1)[1])
        if parsed is None:
            raise FastmathError(f"no number after the last '####' in gold answer {answer[-60:]!r}")
        return _canonical(parsed[0])
    bracketed = _GOLD_BRACKETED.fullmatch(answer)
    if bracketed:
        answer = f"{bracketed[1] or ''} {bracketed[2]}".strip()
    values = [v for m in _NUMBER.finditer(_normalize(answer)) if (v := _value(m)) is not None]
    if len(values) != 1:
        what = "no number" if not values else f"{len(values)} numbers"
        raise FastmathError(f"gold answer {answer[:60]!r} has {what}: expected a number or '... #### N'")
    return _canonical(values[0])


def truncate_at_new_question(text: str) -> str:
    """`text` up to where the model starts inventing a next question, exemplar or chat turn.

    A cut only counts once the model has given some number before it (a digit, or an answer in
    words such as "The answer is five."): a completion that opens by restating the question
    ("Question: ...") is kept, and so is one that never answered.
    """
    answered = _answered_at(text)
    if answered is None:
        return text
    m = _NEW_QUESTION.search(text, answered + 1)
    return text[: m.start()] if m else text


def _skip(pattern: re.Pattern[str], text: str, pos: int, end: int) -> int:
    """Where `pattern`, which also matches the empty string, stops matching from `pos`."""
    m = pattern.match(text, pos, end)
    return m.end() if m else pos


def _answered_at(text: str) -> int | None:
    """Where the model first gave a number: its first digit, or an earlier answer marker read as words."""
    digit = _DIGIT.search(text)
    before = digit.start() if digit else len(text)
    for m in _MARKERS.finditer(text, 0, before):
        if _read_words(text, _skip(_MARKER_LEADING, text, m.end(), len(text))) is not None:
            return m.start()
    return digit.start() if digit else None


# --- numbers in words -------------------------------------------------------------------------------


def _read_words(text: str, pos: int) -> tuple[Value, int] | None:
    """A number written in English or Chinese words right at `pos`: its value and where it ends."""
    ch = text[pos : pos + 1]
    if ch.isascii() and ch.isalpha():
        return _read_english(text, pos)
    if ch in _ZH_START:
        return _read_chinese(text, pos)
    return None


class _Words:
    """The English number words from a position, lower-cased, read one at a time as the parser asks.

    Past the last number word it answers "", so the parser may look a few words ahead for free.
    """

    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.names: list[str] = []
        self.ends = [pos]  # ends[i]: where the first i words end

    def __getitem__(self, i: int) -> str:
        while len(self.names) <= i:
            m = _EN_WORD.match(self.text, self.ends[-1])
            if m is None or m[1].lower() not in _EN_WORDS:
                return ""
            self.names.append(m[1].lower())
            self.ends.append(m.end())
        return self.names[i]


def _read_english(text: str, pos: int) -> tuple[Value, int] | None:
    """`twenty-five`, `one hundred and five`, `a thousand`, `two thirds`, `minus three`; None if not a number."""
    names = _Words(text, pos)
    i, sign = (1, -1) if names[0] in ("negative", "minus") else (0, 1)
    first, total, group, last, cap = i, 0, 0, "", 10**15
    while word := names[i]:
        if word == "a" and i == first and names[i + 1] in _EN_AFTER_A:
            group, last = 1, "a"
        elif word in _EN_SMALL and (
            last in ("", "hundred", "scale", "and") or (last == "tens" and 0 < _EN_SMALL[word] < 10)
        ):
            if word == "zero" and i != first:
                break
            group, last = group + _EN_SMALL[word], "small"
        elif word in _EN_TENS and last in ("", "hundred", "scale", "and"):
            group, last = group + _EN_TENS[word], "tens"
        elif word == "hundred" and last in ("a", "small", "tens") and 0 < group < 100:
            group, last = group * 100, "hundred"
        elif word in _EN_SCALES and last in ("a", "small", "tens", "hundred") and group > 0 and _EN_SCALES[word] < cap:
            total, group, cap, last = total + group * _EN_SCALES[word], 0, _EN_SCALES[word], "scale"
        elif word == "and" and last in ("hundred", "scale") and names[i + 1] in _EN_AFTER_AND:
            last = "and"
        else:
            break
        i += 1
    if last not in ("small", "tens", "hundred", "scale") and not (last == "a" and names[i] in _EN_AFTER_A):
        return None  # nothing read, or a lone "a" ("a lot"); "a half", "a dozen" end below
    value, i = _english_ending(names, i, Fraction(total + group))
    end = names.ends[i]
    after = _EN_WORD.match(text, end)
    if value == 1 and i == first + 1 and after and after[1].lower() in _EN_PRONOUN_NEXT:
        return None
    return (_negate(value) if sign < 0 else value), end


def _english_ending(names: _Words, i: int, whole: Fraction) -> tuple[Value, int]:
    """What may end an English cardinal: `dozen`, `point five`, `thirds`, `and a half`."""
    if names[i] == "dozen":
        return whole * 12, i + 1
    if names[i] == "point" and names[i + 1] in _EN_SMALL and _EN_SMALL[names[i + 1]] < 10:
        digits: list[str] = []
        while names[i + 1] in _EN_SMALL and _EN_SMALL[names[i + 1]] < 10:
            digits.append(str(_EN_SMALL[names[i + 1]]))
            i += 1
        return _decimal(f"{whole.numerator}.{''.join(digits)}"), i + 1
    if names[i] in _EN_DENOMINATORS and whole > 0:
        return whole / _EN_DENOMINATORS[names[i]], i + 1
    numerator = 1 if names[i + 1] == "a" else _EN_SMALL.get(names[i + 1], 0)
    if names[i] == "and" and numerator and names[i + 2] in _EN_DENOMINATORS:
        return whole + Fraction(numerator, _EN_DENOMINATORS[names[i + 2]]), i + 3
    return whole, i


def _read_chinese(text: str, pos: int, lead: Fraction | None = None) -> tuple[Value, int] | None:
    """A Chinese numeral at `pos`, or the units after a digit number `lead` (`3|万`); None if not one."""
    sign = 1
    if lead is None and text.startswith("负", pos):
        sign, pos = -1, pos + 1
    if lead is None and text.startswith("百分之", pos):  # a percentage reads as its number, like 50%
        pos += 3
    read = _chinese_integer(text, pos, lead)
    if read is None:
        return None
    integer, end = read
    value: Value = integer
    if lead is None and text.startswith("分之", end):  # 三分之一 = 1/3
        numerator = _chinese_integer(text, end + 2, None)
        if numerator is None or integer == 0:
            return None
        value, end = numerator[0] / integer, numerator[1]
    elif lead is None and (decimals := _ZH_DECIMALS.match(text, end)):  # 三点五 = 3.5
        digits = "".join(str(_ZH_DIGITS[c]) for c in decimals[1])
        value, end = _decimal(f"{integer.numerator}.{digits}"), decimals.end()
    if not _ZH_AFTER.match(text, end):
        return None
    return (_negate(value) if sign < 0 else value), end


def _chinese_integer(text: str, pos: int, lead: Fraction | None) -> tuple[Fraction, int] | None:
    """十八, 两千三百, 一百零五, 两百五 (= 250), 3万5千; after digits (`lead`), a unit must follow.

    Units only decrease (the small ones within each 万 or 亿 section), so a numeral is a few dozen
    characters at most, and a sequence that is not one (三五, 一零) stops the reading.
    """
    total = wan = section = Fraction(0)
    digit: Fraction | None = lead
    last_unit, small_cap, seen_wan, seen_yi = 0, 10**4, False, False
    zero = False  # a 零 since the last unit: it holds a place (一百零五 = 105)
    elide = True  # a last single digit counts in the unit below the last one: 两百五 = 250, 三万五 = 35000
    i = pos
    while i < len(text):
        ch = text[i]
        if ch in _ZH_DIGITS:
            if digit is not None or (zero and _ZH_DIGITS[ch] == 0):
                break
            if _ZH_DIGITS[ch]:
                digit = Fraction(_ZH_DIGITS[ch])
            else:
                zero, elide = True, False
        elif "0" <= ch <= "9" and last_unit and digit is None:  # digits after a unit: 3万5千, 1万2000
            run = _ASCII_INTEGER.match(text, i)
            if run is None:
                break
            digit, i = Fraction(int(run[0])), run.end() - 1
            elide = elide and len(run[0]) == 1
        elif ch in _ZH_SMALL_UNITS and not _ZH_MEASURE.match(text, i):
            unit = _ZH_SMALL_UNITS[ch]
            coefficient = digit if digit is not None else (Fraction(1) if unit == 10 else None)
            if unit >= small_cap or coefficient is None:
                break
            section, small_cap, last_unit, digit = section + coefficient * unit, unit, unit, None
            zero, elide = False, True
        elif ch in _ZH_BIG_UNITS:
            unit = _ZH_BIG_UNITS[ch]
            part = section + (digit or 0) + (wan if unit == 10**8 else 0)
            if part == 0 or (seen_wan if unit == 10**4 else seen_yi):
                break
            if unit == 10**4:
                wan, seen_wan = part * unit, True
            else:
                total, wan, seen_yi, seen_wan = part * unit, Fraction(0), True, False
            section, small_cap, last_unit, digit = Fraction(0), 10**4, unit, None
            zero, elide = False, True
        else:
            break
        i += 1
    if i == pos or (lead is not None and not last_unit):
        return None
    if digit is not None and last_unit and elide:
        digit *= last_unit // 10
    return total + wan + section + (digit or 0), i


# --- reading a completion ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    """A number read at an answer position: its value (None for a zero denominator) and where it ends."""

    value: Value | None
    end: int
    in_words: bool


class _Completion:
    """A normalised completion with its numbers, sentence ends and `=` signs indexed in one pass each.

    A looping model can write tens of thousands of answer markers; each is read here with binary
    searches in these indexes instead of a fresh scan of the text, so grading stays linear.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.numbers = [m.start() for m in _NUMBER.finditer(text)]
        self.stops = [m.start() for m in _SENTENCE_END.finditer(text)]
        self.equals = [m.start() for m in _EQUALS.finditer(text)]

    def sentence_end(self, pos: int) -> int:
        i = bisect_left(self.stops, pos)
        return self.stops[i] if i < len(self.stops) else len(self.text)

    def number_in(self, lo: int, hi: int, limit: int | None = None) -> re.Match[str] | None:
        """The first number in digits that starts in [lo, hi), read no further than `limit` (default `hi`)."""
        i = bisect_left(self.numbers, lo)
        if i == len(self.numbers) or self.numbers[i] >= hi:
            return None
        return _NUMBER.match(self.text, self.numbers[i], hi if limit is None else limit)

    def token_at(self, pos: int, hi: int) -> _Token | None:
        """The number, in digits or words, that starts exactly at `pos` and ends by `hi`."""
        m = self.number_in(pos, pos + 1, hi)
        token = self.digits(m, hi) if m else self.words(pos)
        return token if token is not None and token.end <= hi else None

    def first_token(self, start: int, end: int) -> _Token | None:
        """An answer's number: in words only right at `start`, in digits anywhere before `end`."""
        token = self.words(start)
        if token is not None and token.end <= end:
            return token
        m = self.number_in(start, end)
        return self.digits(m, end) if m else None

    def words(self, pos: int) -> _Token | None:
        """A number in words right at `pos` (answer positions only: "one of them" is no number)."""
        read = _read_words(self.text, pos)
        return None if read is None else _Token(read[0], read[1], True)

    def digits(self, m: re.Match[str], hi: int) -> _Token:
        """A number in digits with what completes it: `1.5 million`, `3万5千`, `2 and 1/2`."""
        value, end = _value(m), m.end()
        if not isinstance(value, Fraction) or m["den"] is not None:
            return _Token(value, end, False)
        sign = -1 if value < 0 else 1
        chinese = _read_chinese(self.text, end, abs(value)) if self.text[end : end + 1] in _ZH_UNITS else None
        scale = _SCALE_AFTER.match(self.text, end, hi)
        fraction = self.proper_fraction(_AND.match(self.text, end, hi), hi) if value.denominator == 1 else None
        if chinese is not None and isinstance(chinese[0], Fraction) and chinese[1] <= hi:
            value, end = sign * chinese[0], chinese[1]
        elif scale is not None:
            value, end = value * _SCALE_WORDS[scale[1].lower()], scale.end()
        elif fraction is not None:
            value, end = value + sign * fraction[0], fraction[1]
        return _Token(value, end, False)

    def proper_fraction(self, link: re.Match[str] | None, hi: int) -> tuple[Fraction, int] | None:
        """`1/2` right after `link` (` and `), a fraction below 1 with no whole part; else None."""
        m = self.number_in(link.end(), link.end() + 1, hi) if link else None
        if m is None or m["den"] is None or m["whole"] is not None or m["neg"] or m.end() > hi:
            return None
        value = _value(m)
        return (value, m.end()) if isinstance(value, Fraction) and 0 < value < 1 else None

    def next_in_list(self, token: _Token, hi: int) -> _Token | None:
        """The number after `token` when the two form a list (`1, 2`, `3 or 4`, `三、四`)."""
        sep = _LIST_SEP.match(self.text, token.end, hi)
        return self.token_at(sep.end(), hi) if sep and sep.end() > token.end else None

    def strong_answer(self, start: int, end: int) -> Value | _List | None:
        """After "The answer is", in `\\boxed{}`: the first number, or the result of an expression."""
        start = _skip(_LEADING, self.text, start, end)
        first = self.first_token(start, end)
        if first is None:
            return None
        if not first.in_words and _OPERATOR.match(self.text, first.end, end):
            i = bisect_left(self.equals, end) - 1
            after = self.number_in(self.equals[i] + 1, end) if i >= 0 and self.equals[i] >= first.end else None
            if after is not None:
                return self.digits(after, end).value
        return _LIST if self.next_in_list(first, end) else first.value

    def weak_answer(self, start: int, end: int) -> Value | _List | None:
        """After "Answer:" / "A:" / "答：": a number first and then at most a unit, else a worked solution."""
        first = self.token_at(start, end)
        if first is None:
            return None
        last, count = first, 1
        while (following := self.next_in_list(last, end)) is not None:
            last, count = following, count + 1
        tail = _WORD_TAIL if first.in_words else _UNIT_TAIL
        if not tail.fullmatch(self.text, last.end, end):
            return None
        return _LIST if count > 1 else first.value

    def hash_answer(self, pos: int) -> Value | _List | None:
        """`#### N`; None for a markdown heading (`#### Step 1`, `#### 2. Cost`, `#### Two ways`)."""
        end = self.sentence_end(pos)
        token = self.token_at(pos, len(self.text))
        if token is None:
            return None
        heading = (
            _WORD_TAIL.fullmatch(self.text, token.end, end) is None
            if token.in_words
            else _HEADING_AFTER_NUMBER.match(self.text, token.end)
        )
        if heading:
            return None
        return _LIST if self.next_in_list(token, end) else token.value

    def boxed_answers(self) -> Iterator[Value | _List | None]:
        """Every `\\boxed{...}`, last first; braces matched in one pass, so `\\boxed{18 \\text{ dollars}}` is whole."""
        boxes = [m.end() for m in _BOXED.finditer(self.text)]
        if not boxes:
            return
        closing: dict[int, int] = {}
        opened: list[int] = []
        for m in _BRACE.finditer(self.text):
            if m[0] == "{":
                opened.append(m.end())
            elif opened:
                closing[opened.pop()] = m.start()
        for start in reversed(boxes):
            yield self.strong_answer(start, closing.get(start, len(self.text)))

    def hash_answers(self) -> Iterator[Value | _List | None]:
        """Every `#### N`, last first."""
        for m in reversed(list(_HASHES.finditer(self.text))):
            yield self.hash_answer(m.end())

    def phrase_answers(self) -> Iterator[Value | _List | None]:
        """Every answer phrase, strong and weak, last first."""
        for m in reversed(list(_PHRASES.finditer(self.text))):
            start = _skip(_LEADING, self.text, m.end(), len(self.text))
            read = self.weak_answer if m["weak"] is not None else self.strong_answer
            yield read(start, self.sentence_end(start))

    def last_number(self) -> Value | None:
        """The last number written in digits, the fallback when no answer was marked."""
        for start in reversed(self.numbers):
            m = _NUMBER.match(self.text, start)
            value = _value(m) if m else None
            if value is not None:
                return value
        return None


def extract_answer(completion: str) -> str | None:
    """The canonical number the model gave as its answer; None when it gave no number, or a list of them.

    Never raises, and takes time linear in the completion's length, whatever the text.
    """
    text = _Completion(_normalize(truncate_at_new_question(completion)))
    for answers in (text.boxed_answers(), text.hash_answers(), text.phrase_answers()):  # strongest kind first
        found = next((a for a in answers if a is not None), None)
        if found is not None:
            return None if isinstance(found, _List) else _canonical(found)
    number = text.last_number()
    return None if number is None else _canonical(number)


Outcome = Literal["correct", "wrong", "none"]


def outcome(pred: str | None, gold: str, tolerance: float = 0.0) -> Outcome:
    """correct | wrong | none (no answer given): the one place a verdict is decided, for eval,
    pair mining, GRPO's reward, `grade` and the app alike. `gold` is a gold answer as
    `gold_from_answer` reads it; `tolerance` is the task's (see `numbers_equal`)."""
    if pred is None:
        return "none"
    return "correct" if numbers_equal(pred, gold_from_answer(gold), tolerance) else "wrong"


@dataclass(frozen=True)
class Grade:
    pred: str | None  # canonical number the model gave, None when it gave none (or a list)
    outcome: Outcome


def grade(completion: str, gold: str, tolerance: float = 0.0) -> Grade:
    """Grade one completion against a gold answer (bare number or GSM8K `... #### N` text)."""
    pred = extract_answer(completion)
    return Grade(pred, outcome(pred, gold, tolerance))


class _JsonFloat(float):
    """A JSON float that keeps its text, so a gold written with 5,000 digits or as `1e-05` grades as written."""

    text: str

    def __new__(cls, text: str) -> _JsonFloat:
        number = super().__new__(cls, text)
        number.text = text
        return number


def _json_int(text: str) -> int | str:
    """A JSON integer; one past the interpreter's int/str digit limit stays text (and is written back as text)."""
    try:
        return int(text)
    except ValueError:
        return text


def gold_text(answer: str | int | float) -> str:
    """A gold read from JSON, CSV or Parquet as text for `gold_from_answer`: a float as written
    (or its shortest repr), an exponent spelled out (`1e-05` -> `0.00001`)."""
    if isinstance(answer, bool) or not isinstance(answer, float):
        return str(answer)
    text = answer.text if isinstance(answer, _JsonFloat) else repr(answer)
    if "e" not in text.lower():
        return text
    exact = Decimal(text)
    if not exact.is_finite() or abs(exact.adjusted()) > _MAX_GOLD_EXPONENT:
        raise FastmathError(f"gold answer {text[:60]} is out of range")
    return format(exact, "f")


def grade_file(input_path: str | Path, output_path: str | Path) -> dict[str, int | float]:
    """Grade every line of a JSONL file of `completion`/`answer` records, adding `pred` and `outcome`.

    Lines are read here rather than through `io.read_jsonl`: errors must name the line, and a torn
    last line must stop the grading instead of silently shrinking `n`. Everything is checked
    before the output is written, atomically, so a bad line leaves no partial file behind.
    """
    path = Path(input_path)
    if not path.is_file():
        raise FastmathError(f"{path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise FastmathError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    rows: list[dict] = []
    counts: Counter[str] = Counter()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {lineno}"
        try:
            row = json.loads(line, parse_int=_json_int, parse_float=_JsonFloat)
        except json.JSONDecodeError as e:
            raise FastmathError(f"{where}: invalid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise FastmathError(f"{where}: expected a JSON object with 'completion' and 'answer'")
        key = "gold" if "answer" not in row and "gold" in row else "answer"  # fastmath's eval files say `gold`
        missing = [k for k in ("completion", key) if k not in row]
        if missing:
            raise FastmathError(f"{where}: missing field {' and '.join(map(repr, missing))}")
        completion, answer = row["completion"], row[key]
        if not isinstance(completion, str):
            raise FastmathError(f"{where}: 'completion' must be text, got {type(completion).__name__}")
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            raise FastmathError(f"{where}: 'answer' must be number or text, got {type(answer).__name__}")
        try:
            result = grade(completion, gold_text(answer))
        except FastmathError as e:
            raise FastmathError(f"{where}: {e}") from None
        rows.append({**row, "pred": result.pred, "outcome": result.outcome})
        counts[result.outcome] += 1
    atomic_write_jsonl(output_path, rows)
    n = len(rows)
    summary = {"n": n, "correct": counts["correct"], "wrong": counts["wrong"], "none": counts["none"]}
    return summary | {"accuracy": counts["correct"] / n if n else 0.0}
