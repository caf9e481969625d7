"""Benchmarks as tasks: one YAML file each, owning where its problems come from and how they are read.

A task says (lm-evaluation-harness's tasks as data; nanochat's one Task per benchmark):
- `test` (and, if it has one, `train`): a `file` under the data dir (`--data-dir`, else
  $FASTMATH_DATA_DIR; a user's task may also name a file beside its YAML), else the `hub` dataset
  (`subset`, `split`, or one `hub_file` of the dataset repo, as MGSM's TSVs);
- `question` (a field, or a list joined with a space), `answer`, and `group` (a breakdown, as
  CMATH's school grade): the fields of its records;
- `language`: en, zh or auto (per problem);
- `shots`: where few-shot exemplars come from, never a test set: `train` (its own train split),
  another task's name (that task's train split), or a file (`fastmath:samples/...`);
- `tolerance`: the grader's relative tolerance for its golds (0: exact; `grading.numbers_equal`).

Shipped tasks are `fastmath/tasks/<name>.yaml`; a user's task is one such file anywhere, named by
its path wherever a dataset is (`--dataset my_task.yaml`). Eval, the suite, SFT, pair mining and
GRPO all read problems through here (`data.train` may name a task: its train split).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from fastmath import hub, resources
from fastmath.data import Fields, Problem, load_problems
from fastmath.errors import FastmathError
from fastmath.log import log

if TYPE_CHECKING:
    from fastmath.config import DataConfig

FOLDER = Path(__file__).parent
TASK_SUFFIXES = (".yaml", ".yml")
DATA_DIR_ENV = "FASTMATH_DATA_DIR"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


@dataclass(frozen=True)
class Source:
    """Where one split of a task lives: a local file first, else the hub."""

    file: str | None = None  # relative to the data dir (or, for a user's task, to its YAML's folder)
    hub: str | None = None  # hub dataset id
    subset: str | None = None
    split: str = "test"
    hub_file: str | None = None  # one file of the hub dataset's repo instead of its `datasets` build


@dataclass(frozen=True)
class Task:
    name: str
    test: Source
    fields: Fields = Fields()
    language: str = "auto"
    train: Source | None = None
    shots: str = "gsm8k"
    tolerance: float = 0.0
    description: str = ""
    folder: Path | None = None  # a user's task: its YAML's folder, where its relative files may be

    def source(self, split: str, data_dir: Path | None) -> tuple[str, str, str | None]:
        """(file or hub id, hub split, hub subset) of the `test` or `train` split, local copy first."""
        src = self.test if split == "test" else self.train
        if src is None:
            raise FastmathError(
                f"task {self.name!r} has no train split (only its test set): name its test file in "
                "data.train explicitly to train on it anyway, or train on another task"
            )
        if src.file:
            where = [d / src.file for d in (self.folder, data_dir) if d is not None]
            if Path(src.file).is_absolute():
                where = [Path(src.file)]
            found = next((p for p in where if p.is_file()), None)
            if found is not None:
                return str(found), src.split, src.subset
        if src.hub and src.hub_file:
            from huggingface_hub import hf_hub_download

            return hf_hub_download(hub.resolve(src.hub, "dataset"), src.hub_file, repo_type="dataset"), "", None
        if src.hub:
            return src.hub, src.split, src.subset
        looked = f"{data_dir / src.file}" if data_dir and src.file else f"the data dir (${DATA_DIR_ENV})"
        raise FastmathError(
            f"task {self.name!r}: {src.file} not found in {looked}; pass --data-dir DIR (DIR/{src.file}) "
            f"or set {DATA_DIR_ENV}: this benchmark has no hub copy fastmath reads"
        )

    def problems(
        self, split: str = "test", data_dir: Path | None = None, limit: int | None = None, verbose: bool = True
    ) -> list[Problem]:
        """The task's problems of one split, cleaned; bad records reported by file and line, skipped."""
        source, hub_split, subset = self.source(split, data_dir)
        problems = load_problems(source, hub_split, subset, limit, self.language, verbose, self.fields)
        return [dataclasses.replace(p, tolerance=self.tolerance) for p in problems] if self.tolerance else problems

    def shot_source(self, data_dir: Path | None) -> str:
        """Where this task's few-shot exemplars come from: a train split or a file, never a test set."""
        if self.shots == "train":
            return self.source("train", data_dir)[0]
        if self.shots in names():
            return get(self.shots).source("train", data_dir)[0]
        source = self.shots
        if self.folder is not None and not source.startswith(resources.SCHEME) and (self.folder / source).is_file():
            source = str(self.folder / source)
        owner = test_set_of(source)
        if owner is not None:
            raise FastmathError(f"task {self.name!r}: shots {self.shots!r} is the test set of {owner.name!r}")
        return source


def _source(value: Any, where: str) -> Source:
    if not isinstance(value, dict):
        raise FastmathError(f"{where} must be a mapping with file and/or hub")
    unknown = sorted(value.keys() - {f.name for f in dataclasses.fields(Source)})
    if unknown:
        raise FastmathError(f"{where}: unknown key {unknown[0]!r}; use file, hub, subset, split, hub_file")
    src = Source(**{k: str(v) for k, v in value.items() if v is not None})  # null: the default
    if not (src.file or src.hub):
        raise FastmathError(f"{where} needs a file or a hub dataset")
    return src


KEYS = ("name", "description", "language", "test", "train", "question", "answer", "group", "shots", "tolerance")


def parse(text: str, path: Path, user: bool) -> Task:
    """A task from its YAML text; every mistake is one line naming the file and the key."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise FastmathError(f"task file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise FastmathError(f"task file {path} must be a YAML mapping ({', '.join(KEYS)})")
    unknown = sorted(raw.keys() - set(KEYS))
    if unknown:
        raise FastmathError(f"task file {path}: unknown key {unknown[0]!r}; a task has {', '.join(KEYS)}")
    name = str(raw.get("name") or path.stem)
    if not _NAME.fullmatch(name):
        raise FastmathError(f"task file {path}: name {name!r} must be letters, digits, '.', '_', '+' or '-'")
    if "test" not in raw:
        raise FastmathError(f"task file {path}: 'test' is missing; give test: {{file: ...}} or {{hub: ...}}")
    language = str(raw.get("language", "auto"))
    if language not in ("auto", "en", "zh"):
        raise FastmathError(f"task file {path}: language {language!r} must be auto, en or zh")
    tolerance = raw.get("tolerance", 0.0)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < 1:
        raise FastmathError(f"task file {path}: tolerance {tolerance!r} must be a number in [0, 1)")
    question = raw.get("question", "question")
    return Task(
        name=name,
        test=_source(raw["test"], f"task file {path}: test"),
        train=_source(raw["train"], f"task file {path}: train") if raw.get("train") else None,
        fields=Fields.named(question, str(raw.get("answer", "answer")), raw.get("group")),
        language=language,
        shots=str(raw.get("shots", "gsm8k")),
        tolerance=float(tolerance),
        description=str(raw.get("description", "")),
        folder=path.resolve().parent if user else None,
    )


def names() -> list[str]:
    """The shipped tasks, by name."""
    return sorted(p.stem for p in FOLDER.glob("*.yaml"))


def get(name: str) -> Task:
    """A shipped task by name, or a user's task file by path."""
    path = Path(name).expanduser()
    if path.suffix in TASK_SUFFIXES and path.is_file():
        return parse(path.read_text(encoding="utf-8"), path, user=True)
    if name not in names():
        raise FastmathError(f"unknown task {name!r}: use one of {', '.join(names())}, or a task .yaml file")
    shipped = FOLDER / f"{name}.yaml"
    return parse(shipped.read_text(encoding="utf-8"), shipped, user=False)


def from_file(path: str, fields: Fields) -> Task:
    """A data file evaluated as it is: its fields as named, language per problem, GSM8K's train shots."""
    file = Path(resources.resolve(path)).expanduser().resolve()
    return Task(name=file.stem, test=Source(file=str(file)), fields=fields)


def data_dir(given: Path | None = None) -> Path | None:
    """Where local copies of the benchmarks are: `given` (--data-dir), else $FASTMATH_DATA_DIR."""
    env = os.environ.get(DATA_DIR_ENV)
    return given or (Path(env).expanduser() if env else None)


def test_set_of(source: str, split: str | None = None) -> Task | None:
    """The shipped task whose test set `source` is: its file (by path, under any data dir), or its
    hub dataset's test split when `split` is given."""
    path = Path(resources.resolve(source)).expanduser().as_posix()
    for name in names():
        task = get(name)
        file = task.test.file
        if file and (path == file or path.endswith(f"/{file}")):
            return task
        if split is not None and task.test.hub == source and task.test.split == split and not task.test.hub_file:
            return task
    return None


def training_problems(data: DataConfig, limit: int | None) -> list[Problem]:
    """SFT, pair mining and GRPO data (`data.train`): a task's name means its train split, anything
    else a file or hub dataset read with `data.question_field`/`answer_field`. A benchmark's test set
    is used only when named explicitly, as a file or hub split, and then with a warning: a model
    trained on it cannot be measured on it."""
    if data.train in names():
        return get(data.train).problems("train", data_dir(), limit)
    owner = test_set_of(data.train, data.split)
    if owner is not None:
        log.warning(
            f"data.train {data.train} is the test set of benchmark {owner.name!r}: its {owner.name} scores "
            "will measure memory, not skill"
        )
    fields = Fields.named(data.question_field, data.answer_field)
    problems = load_problems(data.train, data.split, data.subset, limit, data.language, fields=fields)
    if owner is not None and owner.tolerance:  # graded as its benchmark grades it, in rewards and pairs alike
        problems = [dataclasses.replace(p, tolerance=owner.tolerance) for p in problems]
    return problems
