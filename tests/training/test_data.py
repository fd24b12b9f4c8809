"""Training data formats and validation: every problem is reported with file:line and field."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from loragraph.errors import DataError
from loragraph.training.data import (
    ClassifyExample,
    GenerateExample,
    PairExample,
    TagExample,
    check_splits,
    load_examples,
    parse_example,
    to_dataset,
    write_jsonl,
)


def _write(path: Path, lines: list[Any]) -> Path:
    """Write raw lines (str as is, anything else as JSON)."""
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


def _problems(err: pytest.ExceptionInfo[DataError]) -> list[str]:
    return [line.strip()[2:] for line in str(err.value).splitlines()[1:]]


def _clf(text: str, label: str) -> dict[str, str]:
    return {"text": text, "label": label}


GOOD_CLF = [_clf("where is my parcel", "order_status"), _clf("parcel late again", "order_status"),
            _clf("refund me please", "refund_request"), _clf("I want my money back", "refund_request")]


# --------------------------------------------------------------------------- happy paths


def test_loads_valid_classify_with_hash_and_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "intent.jsonl", [GOOD_CLF[0], "", GOOD_CLF[1], *GOOD_CLF[2:]])
    data = load_examples(path, "classify", labels=["order_status", "refund_request"])
    assert [type(e) for e in data.examples] == [ClassifyExample] * 4
    assert data.lines == [1, 3, 4, 5]  # the blank line 2 is not an example
    assert data.where(1) == "intent.jsonl:3"
    assert data.data_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data.labels() == ["order_status", "refund_request"]
    assert data.skipped == []


def test_loads_every_kind(tmp_path: Path) -> None:
    tag = _write(tmp_path / "tag.jsonl", [{"text": "order #A-48213 please", "entities": [{"type": "ORDER_ID", "start": 6, "end": 14, "text": "#A-48213"}]},
                                          {"text": "nothing here", "entities": []}])
    gen = _write(tmp_path / "gen.jsonl", [{"input": {"text": "hi", "intent": {"label": "other"}}, "target": "Hello!"}])
    pairs = _write(tmp_path / "pairs.jsonl", [{"input": {"text": "hi"}, "chosen": "Hello!", "rejected": "Go away."}])
    t = load_examples(tag, "tag", labels=["ORDER_ID"], min_per_label=1)
    assert isinstance(t.examples[0], TagExample) and t.examples[0].entities[0].end == 14
    assert t.labels() == ["ORDER_ID"]
    g = load_examples(gen, "generate")
    assert isinstance(g.examples[0], GenerateExample) and g.examples[0].input["intent"] == {"label": "other"}
    p = load_examples(pairs, "pairs")
    assert isinstance(p.examples[0], PairExample) and p.examples[0].rejected == "Go away."


# --------------------------------------------------------------------------- each problem, with file:line


@pytest.mark.parametrize(
    ("kind", "line", "expected"),
    [
        ("classify", "{not json", "bad.jsonl:2: not valid JSON"),
        ("classify", "[1, 2]", "bad.jsonl:2: a line must be a JSON object, got list"),
        ("classify", {"text": "hi"}, "bad.jsonl:2: missing field `label`"),
        ("classify", {"text": "hi", "label": "x", "lang": "en"}, "bad.jsonl:2: unexpected field `lang`"),
        ("classify", {"text": 5, "label": "x"}, "bad.jsonl:2: `text` must be a string, got integer"),
        ("classify", {"text": "   ", "label": "x"}, "bad.jsonl:2: `text` must be a non-empty string"),
        ("tag", {"text": "abc", "entities": "ORDER_ID"}, "bad.jsonl:2: `entities` must be a list, got string"),
        ("tag", {"text": "abc", "entities": [{"type": "X", "start": "0", "end": 1}]}, "bad.jsonl:2: `entities[0].start` must be an integer, got string"),
        ("tag", {"text": "abc", "entities": [{"type": "X", "start": 0, "end": 9}]}, "bad.jsonl:2: `entities[0]` span 0:9 is out of range for a text of 3 characters"),
        ("tag", {"text": "abc", "entities": [{"type": "X", "start": -1, "end": 2}]}, "bad.jsonl:2: `entities[0]` span -1:2 is out of range"),
        ("tag", {"text": "abc", "entities": [{"type": "X", "start": 2, "end": 2}]}, "bad.jsonl:2: `entities[0]` must have `start` < `end`, got 2:2"),
        ("tag", {"text": "abcdef", "entities": [{"type": "X", "start": 0, "end": 3}, {"type": "X", "start": 2, "end": 5}]}, "bad.jsonl:2: `entities[1]` (2:5) overlaps `entities[0]` (0:3)"),
        ("tag", {"text": "abcdef", "entities": [{"type": "X", "start": 0, "end": 3, "text": "abd"}]}, "bad.jsonl:2: `entities[0].text` is 'abd' but `text[0:3]` is 'abc'"),
        ("tag", {"text": "ab cd", "entities": [{"type": "X", "start": 1, "end": 3}]}, "bad.jsonl:2: `entities[0]` span 'b ' starts or ends with whitespace"),
        ("tag", {"text": "abc", "entities": [{"type": "X", "start": 0, "end": 1, "score": 1}]}, "bad.jsonl:2: unexpected field `entities[0].score`"),
        ("generate", {"input": "hi", "target": "x"}, "bad.jsonl:2: `input` must be an object, got string"),
        ("generate", {"input": {}, "target": "x"}, "bad.jsonl:2: `input` must be a non-empty object"),
        ("generate", {"input": {"text": "hi"}, "target": ""}, "bad.jsonl:2: `target` must be a non-empty string"),
        ("generate", {"input": {"text": "hi"}}, "bad.jsonl:2: missing field `target`"),
        ("pairs", {"input": {"text": "hi"}, "chosen": "Hello.", "rejected": " Hello. "}, "bad.jsonl:2: `chosen` and `rejected` are identical"),
        ("pairs", {"input": {"text": "hi"}, "chosen": "Hello.", "rejected": None}, "bad.jsonl:2: `rejected` must be a string, got null"),
    ],
)
def test_each_problem_names_file_line_and_field(tmp_path: Path, kind: str, line: Any, expected: str) -> None:
    first = {
        "classify": _clf("fine line", "x"),
        "tag": {"text": "fine line", "entities": []},
        "generate": {"input": {"text": "fine"}, "target": "ok"},
        "pairs": {"input": {"text": "fine"}, "chosen": "a", "rejected": "b"},
    }[kind]
    path = _write(tmp_path / "bad.jsonl", [first, line])
    with pytest.raises(DataError) as err:
        load_examples(path, kind, min_per_label=0)  # type: ignore[arg-type]
    assert err.value.where == "bad.jsonl:2"
    assert any(p.startswith(expected) for p in _problems(err)), _problems(err)


def test_unknown_labels_and_entity_types(tmp_path: Path) -> None:
    clf = _write(tmp_path / "c.jsonl", [*GOOD_CLF, _clf("hmm", "refnud_request")])
    with pytest.raises(DataError) as err:
        load_examples(clf, "classify", labels=["order_status", "refund_request"])
    assert _problems(err) == ["c.jsonl:5: `label` 'refnud_request' is not one of the labels (order_status, refund_request)"]
    tag = _write(tmp_path / "t.jsonl", [{"text": "call Maria", "entities": [{"type": "PERSN", "start": 5, "end": 10}]}])
    with pytest.raises(DataError, match=r"t\.jsonl:1: .*`entities\[0\]\.type` 'PERSN' is not one of the entity types \(PERSON\)"):
        load_examples(tag, "tag", labels=["PERSON"])
    # reported together with the line's other problems, not hidden by them
    both = _write(tmp_path / "b.jsonl", [{"text": "call Maria", "entities": [{"type": "PERSN", "start": 5, "end": 99}]}])
    with pytest.raises(DataError) as err:
        load_examples(both, "tag", labels=["PERSON"])
    assert [p.split(": ", 1)[1].split(" ")[0] for p in _problems(err)] == ["`entities[0]`", "`entities[0].type`"]


def test_too_few_examples_per_label(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.jsonl", [*GOOD_CLF, _clf("lonely", "complaint")])
    with pytest.raises(DataError) as err:
        load_examples(path, "classify")
    assert _problems(err) == ["c.jsonl:5: `label` 'complaint' has 1 example(s), expected at least 2 (`min_per_label`)"]
    # a declared label with no example at all is reported too, against the file
    with pytest.raises(DataError, match=r"`label` 'other' has 0 example\(s\)"):
        load_examples(path, "classify", labels=["order_status", "refund_request", "complaint", "other"], min_per_label=1)
    assert len(load_examples(path, "classify", min_per_label=1)) == 5
    assert len(load_examples(path, "classify", min_per_label=0)) == 5
    tag = _write(tmp_path / "t.jsonl", [{"text": "Ann and Bob", "entities": [{"type": "PERSON", "start": 0, "end": 3}, {"type": "PERSON", "start": 8, "end": 11}]},
                                        {"text": "at 5 Main St, Leeds", "entities": [{"type": "ADDRESS", "start": 3, "end": 19}]}])
    with pytest.raises(DataError) as err:
        load_examples(tag, "tag", labels=["PERSON", "ADDRESS", "EMAIL"])
    assert _problems(err) == [
        "t.jsonl:2: entity type 'ADDRESS' has 1 span(s), expected at least 2 (`min_per_label`)",
        "t.jsonl: entity type 'EMAIL' has 0 span(s), expected at least 2 (`min_per_label`)",
    ]
    assert len(load_examples(tag, "tag", labels=["PERSON", "ADDRESS"], min_per_label=1)) == 2


def test_duplicates(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.jsonl", [*GOOD_CLF, _clf("where is my parcel ", "refund_request")])
    with pytest.raises(DataError) as err:
        load_examples(path, "classify")
    assert _problems(err) == ["c.jsonl:5: duplicate example: same `text` as line 1 with a different `label` ('order_status' there, 'refund_request' here)"]
    assert len(load_examples(path, "classify", allow_duplicates=True)) == 5
    gen = _write(tmp_path / "g.jsonl", [{"input": {"text": "a"}, "target": "x"}, {"input": {"text": "a"}, "target": "y"}])
    with pytest.raises(DataError, match=r"g\.jsonl:2: duplicate example: same `input` as line 1"):
        load_examples(gen, "generate")
    # two different rejected answers to one input are two different pairs
    pairs = _write(tmp_path / "p.jsonl", [{"input": {"text": "a"}, "chosen": "x", "rejected": "y"}, {"input": {"text": "a"}, "chosen": "x", "rejected": "z"}])
    assert len(load_examples(pairs, "pairs")) == 2


def test_all_problems_are_collected_and_the_first_is_where(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.jsonl", [GOOD_CLF[0], "oops", GOOD_CLF[1], {"text": ""}, *GOOD_CLF[2:], {"label": 3}])
    with pytest.raises(DataError) as err:
        load_examples(path, "classify")
    assert err.value.where == "c.jsonl:2"
    assert str(err.value).startswith("c.jsonl:2: 5 problem(s) in `c.jsonl`:")
    wheres = [p.split(": ")[0] for p in _problems(err)]
    assert wheres == ["c.jsonl:2", "c.jsonl:4", "c.jsonl:4", "c.jsonl:7", "c.jsonl:7"]


def test_skip_invalid_reports_every_skipped_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.jsonl", [GOOD_CLF[0], "oops", GOOD_CLF[1], {"text": "x", "label": "order_status", "y": 1}, *GOOD_CLF[2:], GOOD_CLF[0]])
    data = load_examples(path, "classify", skip_invalid=True)
    assert len(data) == 4 and data.lines == [1, 3, 5, 6]
    skipped = [(p.where, p.message.split(":")[0].split(" (")[0]) for p in data.skipped]
    assert skipped == [
        ("c.jsonl:2", "not valid JSON"),
        ("c.jsonl:4", "unexpected field `y`"),
        ("c.jsonl:7", "duplicate example"),
    ]


def test_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no valid examples"):
        load_examples(_write(tmp_path / "e.jsonl", ["", "  "]), "classify")
    with pytest.raises(DataError, match="data file not found"):
        load_examples(tmp_path / "nope.jsonl", "classify")
    with pytest.raises(DataError, match="`kind` must be one of"):
        load_examples(_write(tmp_path / "x.jsonl", [GOOD_CLF[0]]), "regress")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="not UTF-8"):
        (tmp_path / "latin.jsonl").write_bytes('{"text": "caf\xe9", "label": "x"}\n'.encode("latin-1"))
        load_examples(tmp_path / "latin.jsonl", "classify")


def test_line_numbers_survive_bom_crlf_and_unicode_separators(tmp_path: Path) -> None:
    rows = [_clf("one\u2028two\x85three", "x"), _clf("second", "x"), {"text": "third"}]
    body = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n"
    (tmp_path / "w.jsonl").write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    with pytest.raises(DataError) as err:
        load_examples(tmp_path / "w.jsonl", "classify")
    assert _problems(err) == ["w.jsonl:3: missing field `label`"]
    data = load_examples(tmp_path / "w.jsonl", "classify", skip_invalid=True)
    assert data.examples[0].text == "one\u2028two\x85three" and data.lines == [1, 2]


def test_parse_example_direct() -> None:
    assert parse_example({"text": "a", "label": "b"}, "classify") == ClassifyExample(text="a", label="b")
    with pytest.raises(ValueError, match="missing field `label`"):
        parse_example({"text": "a"}, "classify")


# --------------------------------------------------------------------------- splits


def test_check_splits_reports_leakage(tmp_path: Path) -> None:
    train = load_examples(_write(tmp_path / "train.jsonl", GOOD_CLF), "classify")
    val = load_examples(_write(tmp_path / "validation.jsonl", [_clf("new one", "order_status"), _clf(" refund me please", "refund_request")]), "classify", min_per_label=0)
    test = load_examples(_write(tmp_path / "test.jsonl", [_clf("new one", "order_status"), _clf("fresh", "order_status")]), "classify", min_per_label=0)
    with pytest.raises(DataError) as err:
        check_splits(train, val, test)
    assert err.value.where == "validation.jsonl:2"
    problems = check_splits(train, val, test, raise_errors=False)
    assert [str(p) for p in problems] == [
        "validation.jsonl:2: leakage: same `text` as train.jsonl:3",
        "test.jsonl:1: leakage: same `text` as validation.jsonl:1",
    ]
    clean = load_examples(_write(tmp_path / "clean.jsonl", [_clf("brand new", "order_status")]), "classify", min_per_label=0)
    assert check_splits(train, clean) == []


def test_check_splits_for_generate_compares_inputs(tmp_path: Path) -> None:
    a = load_examples(_write(tmp_path / "a.jsonl", [{"input": {"text": "x", "intent": {"label": "o"}}, "target": "1"}]), "generate")
    b = load_examples(_write(tmp_path / "b.jsonl", [{"input": {"intent": {"label": "o"}, "text": "x"}, "target": "2"}]), "generate")
    assert [p.where for p in check_splits(a, b, raise_errors=False)] == ["b.jsonl:1"]


# --------------------------------------------------------------------------- datasets


def test_to_dataset_columns(tmp_path: Path) -> None:
    clf = load_examples(_write(tmp_path / "c.jsonl", GOOD_CLF), "classify")
    ds = to_dataset(clf, labels=["refund_request", "order_status"])
    assert ds.column_names == ["text", "label", "label_id"] and ds[0]["label_id"] == 1
    tag = load_examples(_write(tmp_path / "t.jsonl", [{"text": "hi Ann", "entities": [{"type": "PERSON", "start": 3, "end": 6}]}]), "tag", min_per_label=1)
    assert to_dataset(tag)[0]["entities"] == [{"type": "PERSON", "start": 3, "end": 6}]
    gen_rows = [{"input": {"text": "a", "intent": {"label": "x"}}, "target": "T1"}, {"input": {"text": "b"}, "target": "T2"}]
    gen = load_examples(_write(tmp_path / "g.jsonl", gen_rows), "generate")
    raw = to_dataset(gen)
    assert json.loads(raw[1]["input"]) == {"text": "b"}  # no invented keys from other rows
    rendered = to_dataset(gen, prompt_template="Say: {{ text }}", system="Be brief.", conversational=True)
    assert rendered[0]["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say: a"}]
    assert rendered[0]["completion"] == [{"role": "assistant", "content": "T1"}]
    pairs = load_examples(_write(tmp_path / "p.jsonl", [{"input": {"text": "a"}, "chosen": "good", "rejected": "bad"}]), "pairs")
    assert to_dataset(pairs, prompt_template="{{ text }}")[0] == {"prompt": "a", "chosen": "good", "rejected": "bad"}


def test_write_jsonl_round_trip(tmp_path: Path) -> None:
    rows = [ClassifyExample(text="a b", label="x"), ClassifyExample(text="c", label="x")]
    assert write_jsonl(tmp_path / "out" / "c.jsonl", rows) == 2
    assert load_examples(tmp_path / "out" / "c.jsonl", "classify").examples == rows
