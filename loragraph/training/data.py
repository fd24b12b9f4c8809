"""Training data: the JSONL formats of every stage kind, validated before any training.

One example per line (blank lines are ignored):

- classify: ``{"text": str, "label": str}``
- tag: ``{"text": str, "entities": [{"type": str, "start": int, "end": int}]}``; offsets are
  character offsets into ``text``, ``end`` exclusive; an entity may carry ``"text"``, which must
  then equal ``text[start:end]``.
- generate: ``{"input": {...}, "target": str}``; ``input`` is the template context a pipeline
  gives the stage (``text`` plus earlier stages' outputs by stage name).
- pairs (preference pairs for DPO): ``{"input": {...}, "chosen": str, "rejected": str}``.

``load_examples`` checks every line and collects *all* problems, each with ``file.jsonl:LINE``
and the field in backticks. By default it raises one ``DataError`` listing them (the first
problem is the error's ``where``); with ``skip_invalid=True`` it drops the broken lines and
returns them in ``LoadedData.skipped`` so nothing disappears silently. ``check_splits``
reports leakage (the same example in two splits).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from loragraph.errors import DataError, Problem

__all__ = [
    "DEFAULT_MIN_PER_LABEL",
    "KINDS",
    "ClassifyExample",
    "DataKind",
    "EntitySpan",
    "Example",
    "GenerateExample",
    "LoadedData",
    "PairExample",
    "TagExample",
    "check_splits",
    "example_key",
    "load_examples",
    "parse_example",
    "to_dataset",
    "write_jsonl",
]

DataKind: TypeAlias = Literal["classify", "tag", "generate", "pairs"]
KINDS: tuple[DataKind, ...] = ("classify", "tag", "generate", "pairs")

DEFAULT_MIN_PER_LABEL = 2
"""A classify label (or a declared label) with fewer training examples than this is an error."""

_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


def _not_blank(value: str, info: ValidationInfo) -> str:
    if not value.strip():
        raise ValueError(f"`{info.field_name}` must be a non-empty string, got {value!r}")
    return value


Text = Annotated[StrictStr, AfterValidator(_not_blank)]


class EntitySpan(BaseModel):
    """One entity of a tag example: a typed span of the example's text."""

    model_config = _STRICT

    type: StrictStr = Field(description="entity type, e.g. `ORDER_ID`")
    start: StrictInt = Field(description="character offset where the span starts (inclusive)")
    end: StrictInt = Field(description="character offset where the span ends (exclusive)")
    text: StrictStr | None = Field(None, description="optional copy of the span; must equal `text[start:end]`")


class ClassifyExample(BaseModel):
    """A classify example: a text and its one label."""

    model_config = _STRICT

    text: Text = Field(description="the input text")
    label: Text = Field(description="the class label of the text")


class TagExample(BaseModel):
    """A tag example: a text and its entity spans (character offsets, end exclusive)."""

    model_config = _STRICT

    text: Text = Field(description="the input text")
    entities: list[EntitySpan] = Field(description="entity spans of `text`, may be empty")

    @model_validator(mode="after")
    def _check(self) -> TagExample:
        problems: list[str] = []
        n = len(self.text)
        for i, ent in enumerate(self.entities):
            field = f"entities[{i}]"
            if not ent.type.strip():
                problems.append(f"`{field}.type` must be a non-empty string")
            if ent.start < 0 or ent.end > n:
                problems.append(f"`{field}` span {ent.start}:{ent.end} is out of range for a text of {n} characters")
                continue
            if ent.start >= ent.end:
                problems.append(f"`{field}` must have `start` < `end`, got {ent.start}:{ent.end}")
                continue
            span = self.text[ent.start : ent.end]
            if ent.text is not None and ent.text != span:
                problems.append(f"`{field}.text` is {ent.text!r} but `text[{ent.start}:{ent.end}]` is {span!r}")
            elif span != span.strip():
                problems.append(f"`{field}` span {span!r} starts or ends with whitespace")
        ordered = sorted(
            (e.start, e.end, i) for i, e in enumerate(self.entities) if 0 <= e.start < e.end <= n
        )
        for (s1, e1, i1), (s2, e2, i2) in itertools.pairwise(ordered):
            if s2 < e1:
                problems.append(f"`entities[{i2}]` ({s2}:{e2}) overlaps `entities[{i1}]` ({s1}:{e1})")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class GenerateExample(BaseModel):
    """A generate example: the template context of the stage and the text it should produce."""

    model_config = _STRICT

    input: dict[str, Any] = Field(description="template context: `text` plus earlier stages' outputs by stage name")
    target: Text = Field(description="the text the stage should generate")

    @model_validator(mode="after")
    def _check(self) -> GenerateExample:
        if not self.input:
            raise ValueError("`input` must be a non-empty object")
        return self


class PairExample(BaseModel):
    """A preference pair: a context, a preferred (`chosen`) and a worse (`rejected`) output."""

    model_config = _STRICT

    input: dict[str, Any] = Field(description="template context: `text` plus earlier stages' outputs by stage name")
    chosen: Text = Field(description="the preferred output")
    rejected: Text = Field(description="the dispreferred output")

    @model_validator(mode="after")
    def _check(self) -> PairExample:
        if not self.input:
            raise ValueError("`input` must be a non-empty object")
        if self.chosen.strip() == self.rejected.strip():
            raise ValueError("`chosen` and `rejected` are identical; a preference pair needs two different outputs")
        return self


Example: TypeAlias = ClassifyExample | TagExample | GenerateExample | PairExample

_MODELS: dict[str, type[BaseModel]] = {
    "classify": ClassifyExample,
    "tag": TagExample,
    "generate": GenerateExample,
    "pairs": PairExample,
}


class LoadedData(BaseModel):
    """The valid examples of one JSONL file, what was skipped, and the file's hash."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: str = Field(description="the file that was read")
    kind: DataKind = Field(description="the data kind: `classify`, `tag`, `generate` or `pairs`")
    examples: list[Example] = Field(description="the valid examples, in file order")
    lines: list[int] = Field(description="1-based line number of each example in `examples`")
    skipped: list[Problem] = Field(default_factory=list, description="problems of lines dropped by `skip_invalid` (file:line, what)")
    data_hash: str = Field(description="sha256 hex digest of the file's bytes")

    @property
    def name(self) -> str:
        """The file name used in `file.jsonl:LINE` locations."""
        return Path(self.path).name

    def where(self, index: int) -> str:
        """`file.jsonl:LINE` of example ``index``."""
        return f"{self.name}:{self.lines[index]}"

    def labels(self) -> list[str]:
        """Sorted class labels (classify) or entity types (tag) found in the examples."""
        found: set[str] = set()
        for ex in self.examples:
            if isinstance(ex, ClassifyExample):
                found.add(ex.label)
            elif isinstance(ex, TagExample):
                found.update(e.type for e in ex.entities)
        return sorted(found)

    def __len__(self) -> int:
        return len(self.examples)


# --------------------------------------------------------------------------- parsing


def _loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _messages(err: ValidationError, model: type[BaseModel]) -> list[str]:
    out: list[str] = []
    for e in err.errors(include_url=False):
        field = _loc(e["loc"])
        etype = e["type"]
        if etype == "missing":
            out.append(f"missing field `{field}`")
        elif etype == "extra_forbidden":
            allowed = ", ".join(f"`{f}`" for f in model.model_fields) if len(e["loc"]) == 1 else "`type`, `start`, `end`, `text`"
            out.append(f"unexpected field `{field}` (expected {allowed})")
        elif etype in _TYPE_NAMES or etype.endswith("_type"):
            expected = _TYPE_NAMES.get(etype, etype.removesuffix("_type"))
            out.append(f"`{field}` must be {expected}, got {_json_type(e.get('input'))}")
        elif etype == "value_error":
            ctx = e.get("ctx") or {}
            msg = str(ctx.get("error", e["msg"]))
            out.extend(msg.split("; "))
        else:
            out.append(f"`{field or 'line'}`: {e['msg']}")
    return out


def parse_example(obj: Any, kind: DataKind) -> Example:
    """Validate one decoded JSON value as an example of ``kind``; raises ``ValueError`` listing every problem."""
    model = _MODELS[kind]
    if not isinstance(obj, dict):
        raise ValueError(f"a line must be a JSON object, got {_json_type(obj)}")
    try:
        return model.model_validate(obj)  # type: ignore[return-value]
    except ValidationError as err:
        raise ValueError("; ".join(_messages(err, model))) from None


def example_key(example: Example) -> str:
    """What makes two examples "the same" (duplicates, leakage): the text, or the input."""
    if isinstance(example, ClassifyExample | TagExample):
        return example.text.strip()
    return json.dumps(example.input, sort_keys=True, ensure_ascii=False)


def _semantic_problems(ex: Example, labels: set[str] | None) -> list[str]:
    if labels is None:
        return []
    if isinstance(ex, ClassifyExample) and ex.label not in labels:
        return [f"`label` {ex.label!r} is not one of the labels ({', '.join(sorted(labels))})"]
    if isinstance(ex, TagExample):
        return [
            f"`entities[{i}].type` {e.type!r} is not one of the entity types ({', '.join(sorted(labels))})"
            for i, e in enumerate(ex.entities)
            if e.type not in labels
        ]
    return []


def _raw_type_problems(obj: Any, kind: str, labels: set[str] | None) -> list[str]:
    """Unknown entity types of a tag line that failed validation for another reason (report all at once)."""
    if kind != "tag" or labels is None or not isinstance(obj, dict) or not isinstance(obj.get("entities"), list):
        return []
    return [
        f"`entities[{i}].type` {e['type']!r} is not one of the entity types ({', '.join(sorted(labels))})"
        for i, e in enumerate(obj["entities"])
        if isinstance(e, dict) and isinstance(e.get("type"), str) and e["type"] not in labels
    ]


def _dup_key(ex: Example) -> str:
    if isinstance(ex, PairExample):
        return json.dumps([ex.input, ex.chosen.strip(), ex.rejected.strip()], sort_keys=True, ensure_ascii=False)
    return example_key(ex)


def load_examples(
    path: str | Path,
    kind: DataKind,
    *,
    labels: Iterable[str] | None = None,
    skip_invalid: bool = False,
    min_per_label: int = DEFAULT_MIN_PER_LABEL,
    allow_duplicates: bool = False,
) -> LoadedData:
    """Read and validate a JSONL file of ``kind`` examples.

    ``labels``: the allowed class labels (classify) or entity types (tag); unknown ones are
    errors. Every label found or listed needs ``min_per_label`` examples (classify) or spans
    (tag); pass ``min_per_label=0`` for evaluation splits that may miss a rare label.
    Duplicates (same text; for generate the same input; for pairs the same triple) are errors
    unless ``allow_duplicates``. Line problems raise one ``DataError`` listing all of them, or
    with ``skip_invalid`` are dropped and reported in ``LoadedData.skipped``. Too few examples
    per label concerns the whole file and raises even with ``skip_invalid``.
    """
    if kind not in _MODELS:
        raise DataError(f"`kind` must be one of {', '.join(KINDS)}, got {kind!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: expected a JSONL file at `{path}`", where=str(path))
    raw = path.read_bytes()
    name = path.name
    label_set = set(labels) if labels is not None else None
    if label_set is not None and kind in ("generate", "pairs"):
        raise DataError(f"`labels` only apply to classify and tag data, not {kind}")

    examples: list[Example] = []
    lines: list[int] = []
    problems: list[Problem] = []
    seen: dict[str, tuple[int, Example]] = {}
    try:
        text = raw.decode("utf-8-sig")  # a leading BOM (some editors write one) is not part of line 1
    except UnicodeDecodeError as exc:
        raise DataError(f"file is not UTF-8 (byte {exc.start}): expected UTF-8 JSON lines", where=name) from None

    # split on "\n" only: str.splitlines() would also split inside JSON strings holding
    # U+2028, U+0085 and other characters that json.dumps(ensure_ascii=False) writes raw
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(where, f"not valid JSON: {exc.msg} (column {exc.colno}); expected one JSON object per line"))
            continue
        try:
            ex = parse_example(obj, kind)
        except ValueError as exc:
            problems.extend(Problem(where, msg) for msg in str(exc).split("; "))
            problems.extend(Problem(where, msg) for msg in _raw_type_problems(obj, kind, label_set))
            continue
        semantic = _semantic_problems(ex, label_set)
        if semantic:
            problems.extend(Problem(where, msg) for msg in semantic)
            continue
        key = _dup_key(ex)
        if key in seen and not allow_duplicates:
            first_line, first = seen[key]
            what = "text" if kind in ("classify", "tag") else "input"
            extra = ""
            if isinstance(ex, ClassifyExample) and isinstance(first, ClassifyExample) and ex.label != first.label:
                extra = f" with a different `label` ({first.label!r} there, {ex.label!r} here)"
            problems.append(Problem(where, f"duplicate example: same `{what}` as line {first_line}{extra}"))
            continue
        seen.setdefault(key, (lineno, ex))
        examples.append(ex)
        lines.append(lineno)

    if problems and not skip_invalid:
        raise _data_error(problems, name)
    if not examples:
        raise DataError(f"no valid examples in `{name}`: expected at least one JSON object line", where=name)

    if kind in ("classify", "tag") and min_per_label > 0:
        few = _too_few(examples, lines, name, label_set, min_per_label)
        if few:
            raise _data_error(few, name)

    return LoadedData(
        path=str(path),
        kind=kind,
        examples=examples,
        lines=lines,
        skipped=problems,
        data_hash=hashlib.sha256(raw).hexdigest(),
    )


def _too_few(examples: list[Example], lines: list[int], name: str, labels: set[str] | None, minimum: int) -> list[Problem]:
    """Labels (classify) or entity types (tag), found or declared, with fewer than ``minimum`` examples / spans."""
    counts: Counter[str] = Counter()
    first_line: dict[str, int] = {}
    for ex, ln in zip(examples, lines, strict=True):
        found = [ex.label] if isinstance(ex, ClassifyExample) else [e.type for e in ex.entities] if isinstance(ex, TagExample) else []
        for lab in found:
            counts[lab] += 1
            first_line.setdefault(lab, ln)
    is_tag = isinstance(examples[0], TagExample)
    field, unit = ("entity type", "span(s)") if is_tag else ("`label`", "example(s)")
    return [
        Problem(
            f"{name}:{first_line[lab]}" if lab in first_line else name,
            f"{field} {lab!r} has {counts.get(lab, 0)} {unit}, expected at least {minimum} (`min_per_label`)",
        )
        for lab in sorted(set(counts) | (labels or set()))
        if counts.get(lab, 0) < minimum
    ]


def _data_error(problems: list[Problem], name: str) -> DataError:
    listed = "\n".join(f"  - {p}" for p in problems)
    return DataError(f"{len(problems)} problem(s) in `{name}`:\n{listed}", where=problems[0].where)


# --------------------------------------------------------------------------- splits


def check_splits(
    train: LoadedData,
    validation: LoadedData | None = None,
    test: LoadedData | None = None,
    *,
    raise_errors: bool = True,
) -> list[Problem]:
    """Report every example that appears in two splits (leakage); same key as ``example_key``.

    Returns the problems (``where`` = the later split's ``file:line``); raises one
    ``DataError`` listing them when ``raise_errors`` and there are any.
    """
    splits = [s for s in (train, validation, test) if s is not None]
    kinds = {s.kind for s in splits}
    if len(kinds) > 1:
        raise DataError(f"splits must have one kind, got {sorted(kinds)}")
    problems: list[Problem] = []
    earlier: dict[str, str] = {}
    for split in splits:
        here: dict[str, str] = {}
        for i, ex in enumerate(split.examples):
            key = example_key(ex)
            if key in earlier:
                what = "text" if split.kind in ("classify", "tag") else "input"
                problems.append(Problem(split.where(i), f"leakage: same `{what}` as {earlier[key]}"))
            here.setdefault(key, split.where(i))
        for key, where in here.items():
            earlier.setdefault(key, where)
    if problems and raise_errors:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise DataError(f"{len(problems)} example(s) leak between splits:\n{listed}", where=problems[0].where)
    return problems


# --------------------------------------------------------------------------- datasets


def to_dataset(
    data: LoadedData | Sequence[Example],
    *,
    labels: Sequence[str] | None = None,
    prompt_template: str | None = None,
    system: str | None = None,
    conversational: bool = False,
) -> Any:
    """A ``datasets.Dataset`` of the examples.

    - classify: columns ``text``, ``label`` (+ ``label_id``, the index in ``labels``, when given);
    - tag: ``text``, ``entities`` (list of ``{type, start, end}``);
    - generate / pairs without ``prompt_template``: ``input`` as a JSON string (inputs differ in
      shape, Arrow would otherwise invent ``None`` keys) and ``target`` / ``chosen``, ``rejected``;
    - generate / pairs with ``prompt_template``: each input rendered by
      ``loragraph.pipelines.templates.render_prompt`` into TRL's formats: ``prompt`` and
      ``completion`` (generate) or ``prompt``, ``chosen``, ``rejected`` (pairs). With
      ``conversational`` these are chat messages (``system`` first, when given).
    """
    from datasets import Dataset

    examples = list(data.examples) if isinstance(data, LoadedData) else list(data)
    where = data.where if isinstance(data, LoadedData) else (lambda i: f"example {i}")
    rows: list[dict[str, Any]] = []
    label_index = {lab: i for i, lab in enumerate(labels)} if labels is not None else None
    for i, ex in enumerate(examples):
        if isinstance(ex, ClassifyExample):
            row: dict[str, Any] = {"text": ex.text, "label": ex.label}
            if label_index is not None:
                if ex.label not in label_index:
                    raise DataError(f"`label` {ex.label!r} is not one of `labels`", where=where(i))
                row["label_id"] = label_index[ex.label]
        elif isinstance(ex, TagExample):
            row = {"text": ex.text, "entities": [{"type": e.type, "start": e.start, "end": e.end} for e in ex.entities]}
        else:
            if prompt_template is None:
                row = {"input": json.dumps(ex.input, ensure_ascii=False, sort_keys=True)}
            else:
                from loragraph.pipelines.templates import render_prompt

                prompt = render_prompt(prompt_template, ex.input, where=where(i))
                if conversational:
                    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
                    row = {"prompt": msgs}
                else:
                    row = {"prompt": prompt}

            def out(text: str) -> Any:
                return [{"role": "assistant", "content": text}] if (conversational and prompt_template) else text

            if isinstance(ex, GenerateExample):
                row["completion" if prompt_template else "target"] = out(ex.target)
            else:
                row["chosen"] = out(ex.chosen)
                row["rejected"] = out(ex.rejected)
        rows.append(row)
    return Dataset.from_list(rows)


def write_jsonl(path: str | Path, rows: Iterable[BaseModel | dict[str, Any]]) -> int:
    """Write rows as JSONL (UTF-8, ``\\n`` line ends, keys in model order); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            obj = row.model_dump(exclude_none=True) if isinstance(row, BaseModel) else row
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
            n += 1
    return n
