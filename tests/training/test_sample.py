"""The sample customer-service data: reproducible, complete, exactly annotated, no leakage."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from loragraph.cli import main
from loragraph.errors import ConfigError
from loragraph.training import sample_text as T
from loragraph.training.data import check_splits, load_examples
from loragraph.training.sample import (
    ENTITY_FORMATS,
    ENTITY_TYPES,
    INTENTS,
    REJECTION_KINDS,
    SIZE_PRESETS,
    SPLITS,
    SampleSizes,
    generate_messages,
    generate_sample,
    load_templates,
    parse_sizes,
)

TAXONOMY_INTENTS = {
    "order_status", "cancel_order", "refund_request", "return_item", "change_shipping_address", "billing_issue",
    "account_access", "product_question", "technical_support", "complaint", "other",
}
TAXONOMY_TYPES = {"ORDER_ID", "PERSON", "EMAIL", "PHONE", "DATE", "AMOUNT", "PRODUCT", "ADDRESS"}
DATASETS = {"intent": "classify", "entities": "tag", "summary": "generate", "reply": "generate", "reply_pairs": "pairs"}
SMALL = SampleSizes(intent=132, entities=132, summary=44, reply=44, reply_pairs=60, documents=30)


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    generate_sample(out, seed=0, sizes=SMALL)
    return out


@pytest.fixture(scope="module")
def messages() -> list[Any]:
    return generate_messages(330, seed=0, stream="probe")


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- layout and determinism


def test_layout_and_manifest(sample_dir: Path) -> None:
    expected = {f"{name}/{split}.jsonl" for name in DATASETS for split in SPLITS} | {"documents.jsonl", "manifest.json"}
    assert set(_files(sample_dir)) == expected
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["sizes"] == SMALL.model_dump()
    for name, kind in DATASETS.items():
        assert manifest["datasets"][name]["kind"] == kind
        for split in SPLITS:
            rows = _rows(sample_dir / name / f"{split}.jsonl")
            entry = manifest["datasets"][name]["splits"][split]
            assert entry["count"] == len(rows) == SMALL.split_sizes(getattr(SMALL, name))[split]
            assert sum(entry["labels"].values()) == len(rows)
    intent_train = _rows(sample_dir / "intent" / "train.jsonl")
    assert manifest["datasets"]["intent"]["splits"]["train"]["labels"] == dict(sorted(Counter(r["label"] for r in intent_train).items()))


def test_same_seed_same_bytes_other_seed_other_bytes(sample_dir: Path, tmp_path: Path) -> None:
    generate_sample(tmp_path / "again", seed=0, sizes=SMALL)
    assert _files(tmp_path / "again") == _files(sample_dir)
    generate_sample(tmp_path / "seed1", seed=1, sizes=SMALL)
    other = _files(tmp_path / "seed1")
    assert set(other) == set(_files(sample_dir))
    assert all(other[f] != _files(sample_dir)[f] for f in other if f.endswith(".jsonl"))


def test_bytes_do_not_depend_on_hash_randomisation(tmp_path: Path) -> None:
    code = (
        "import sys; from loragraph.training.sample import generate_sample, SIZE_PRESETS; "
        "generate_sample(sys.argv[1], seed=3, sizes=SIZE_PRESETS['tiny'])"
    )
    for hashseed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        subprocess.run([sys.executable, "-c", code, str(tmp_path / hashseed)], check=True, env=env, timeout=120)
    assert _files(tmp_path / "1") == _files(tmp_path / "2")


# --------------------------------------------------------------------------- validity and coverage


def test_every_file_passes_validation_without_leakage(sample_dir: Path) -> None:
    for name, kind in DATASETS.items():
        labels = INTENTS if kind == "classify" else ENTITY_TYPES if kind == "tag" else None
        splits = [
            load_examples(sample_dir / name / f"{split}.jsonl", kind, labels=labels, min_per_label=2 if split == "train" else 0)  # type: ignore[arg-type]
            for split in SPLITS
        ]
        assert all(not s.skipped for s in splits)
        assert check_splits(*splits) == []


def test_no_text_is_used_twice_across_data_sets(sample_dir: Path) -> None:
    texts: list[str] = [d["text"] for d in _rows(sample_dir / "documents.jsonl")]
    for name in DATASETS:
        for split in SPLITS:
            texts += [r.get("text") or r["input"]["text"] for r in _rows(sample_dir / name / f"{split}.jsonl")]
    assert len(texts) == len(set(texts))


def test_taxonomy_is_complete(sample_dir: Path) -> None:
    assert set(INTENTS) == TAXONOMY_INTENTS and set(ENTITY_TYPES) == TAXONOMY_TYPES
    for split in SPLITS:
        assert {r["label"] for r in _rows(sample_dir / "intent" / f"{split}.jsonl")} == TAXONOMY_INTENTS
    assert {e["type"] for r in _rows(sample_dir / "entities" / "train.jsonl") for e in r["entities"]} == TAXONOMY_TYPES
    counts = Counter(r["label"] for r in _rows(sample_dir / "intent" / "train.jsonl"))
    assert max(counts.values()) - min(counts.values()) <= 1  # balanced


def test_every_entity_span_is_exact_and_well_formed(sample_dir: Path) -> None:
    formats = {t: re.compile(rx, re.IGNORECASE if t in ("PRODUCT", "DATE") else 0) for t, rx in ENTITY_FORMATS.items()}
    seen_order_formats: set[str] = set()
    spans = []
    for split in SPLITS:
        for row in _rows(sample_dir / "entities" / f"{split}.jsonl"):
            spans += [(row["text"], e) for e in row["entities"]]
        for row in _rows(sample_dir / "reply" / f"{split}.jsonl"):
            assert row["input"]["intent"]["label"] in TAXONOMY_INTENTS
            spans += [(row["input"]["text"], e) for e in row["input"]["entities"]["entities"]]
    assert len(spans) > 500
    for text, e in spans:
        span = text[e["start"] : e["end"]]
        assert span == e["text"], (text, e)
        assert formats[e["type"]].fullmatch(span), (e["type"], span)
        # a span is never a fragment of a longer word or number
        assert e["start"] == 0 or not text[e["start"] - 1].isalnum(), (text, e)
        assert e["end"] == len(text) or not text[e["end"]].isalnum() or e["type"] == "PRODUCT", (text, e)
        if e["type"] == "ORDER_ID":
            seen_order_formats.add(re.sub(r"\d", "9", re.sub(r"[A-Z]", "A", span)))
            assert not span.lower().startswith("order")
    assert seen_order_formats == {"#A-99999", "AAA-9999-99999", "9999-999"}


def test_entity_formats_are_varied(sample_dir: Path) -> None:
    by_type: dict[str, set[str]] = {}
    for split in SPLITS:
        for row in _rows(sample_dir / "entities" / f"{split}.jsonl"):
            for e in row["entities"]:
                by_type.setdefault(e["type"], set()).add(e["text"])
    phones = by_type["PHONE"]
    assert any(p.startswith("+") for p in phones) and any(p.startswith("(") for p in phones) and any(p[0].isdigit() for p in phones)
    dates = by_type["DATE"]
    assert any(re.fullmatch(r"\d{4}-\d{2}-\d{2}", d) for d in dates) and any(d in ("yesterday", "last week", "two days ago") or d.startswith("last ") for d in dates)
    amounts = by_type["AMOUNT"]
    assert {a[0] for a in amounts} & {"$", "€", "£"} and any(a.endswith(("pounds", "euros", "USD")) for a in amounts)
    assert any(p.startswith(("Mr.", "Ms.", "Mrs.", "Dr.")) for p in by_type["PERSON"])


# --------------------------------------------------------------------------- realism


def test_many_phrasings_multi_ask_typos_lowercase(messages: list[Any]) -> None:
    styles = Counter(s for m in messages for s in m.styles)
    for style in ("chat", "email", "form", "multi_ask", "main_marked", "typos", "lowercase"):
        assert styles[style] >= 5, styles
    # dozens of distinct asks per intent, each used
    templates = load_templates(0)
    for intent in INTENTS:
        assert len(templates.all(intent)) >= 20, intent
    openings = Counter(m.text.split()[0].lower().strip(",.!") for m in messages)
    assert len(openings) >= 40


def test_multi_ask_label_is_the_main_ask(messages: list[Any]) -> None:
    multi = [m for m in messages if m.secondary]
    assert multi
    for m in multi:
        assert m.secondary != m.intent and m.intent not in ("complaint", "other")
        assert " also " in m.summary  # the summary names the main ask first, then the other
        if "main_marked" in m.styles:
            assert any(marker.strip().lower() in m.text.lower() for marker in T.MAIN_MARKERS)


def test_typo_messages_really_contain_misspellings(messages: list[Any]) -> None:
    vocab: set[str] = set()

    def walk(x: Any) -> None:
        if isinstance(x, str):
            vocab.update(w.lower() for w in re.findall(r"[A-Za-z']+", x))
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(k)
                walk(v)
        elif isinstance(x, list | tuple):
            for v in x:
                walk(v)

    for name in T.__all__:
        if name != "TYPO_WORDS":
            walk(getattr(T, name))
    walk(load_templates(0).train)  # with the presidio-evaluator sentences
    walk(load_templates(0).test)

    def misspelt(m: Any) -> bool:
        local = vocab | {w.lower() for v in m.values.values() if isinstance(v, str) for w in re.findall(r"[A-Za-z']+", v)}
        if "typos" in m.styles:  # "pls", "adress": chat spellings some templates use too, so in `vocab`
            local -= {w.lower() for v in T.TYPO_WORDS.values() for w in re.findall(r"[A-Za-z']+", v)}
        return bool({w.lower() for w in re.findall(r"[A-Za-z']+", m.text)} - local)

    typo = [misspelt(m) for m in messages if "typos" in m.styles]
    clean = [misspelt(m) for m in messages if "typos" not in m.styles]
    assert len(typo) >= 20
    # a typo can make another real word ("reply" -> "rely"), so not every one is visible
    assert sum(typo) >= 0.85 * len(typo)
    assert sum(clean) <= 0.02 * len(clean)


def test_two_amounts_are_ordered_for_instead_of_templates(messages: list[Any]) -> None:
    def num(a: str) -> float:
        return float(re.sub(r"[^\d.]", "", a))

    # "charged {amount} instead of {amount2}", "refunded {amount2} instead of {amount}": amount is the larger
    assert all(num(m.values["amount"]) > num(m.values["amount2"]) for m in messages)
    assert any("amount2" in m.used for m in messages)


def test_detail_lines_start_a_sentence_fit_the_intent_and_need_by_dates_lie_ahead(many_messages: list[Any]) -> None:
    from loragraph.training.sample import _RELATIVE_DATES

    starts = {line.split("{")[0].strip() for line in T.DETAIL_LINES + T.CONTACT_LINES}
    starts = {start for start in starts if len(start.split()) >= 3}  # "I paid" also runs on inside asks
    about_an_item = [line.split("{")[0].strip() for line in T.DETAIL_LINES if re.search(r"\b[Ii]t\b", line)]
    for m in many_messages:
        for start in starts:  # "... I don't need it anymore My name is Joyce" would read as one sentence
            assert not re.search(r"[A-Za-z0-9,] " + re.escape(start), m.text), (start, m.text)
        if m.intent == "account_access":  # "I ordered it today." after a login problem: no item to speak of
            assert not any(start and start in m.text for start in about_an_item), m.text
        if "date2" in m.used:  # "I need it by {date2}": never "by last week"
            assert m.values["date2"] not in _RELATIVE_DATES, m.text
    assert any("date2" in m.used for m in many_messages)


def test_each_split_uses_its_own_held_out_templates() -> None:
    templates = load_templates(0)
    for intent in INTENTS:
        pools = [set(templates.pool(split)[intent]) for split in ("train", "validation", "test")]
        assert all(pools), intent
        assert not (pools[0] & pools[1] or pools[0] & pools[2] or pools[1] & pools[2]), intent
        assert len(templates.all(intent)) == sum(map(len, pools))
    seen: set[str] = set()
    msgs = {split: generate_messages(n, seed=0, split=split, templates=templates, seen=seen)
            for split, n in (("test", 44), ("validation", 44), ("train", 88))}
    for split, own in msgs.items():
        held = {f"{i}:{t}" for i in INTENTS for t, _ in templates.pool(split)[i]}
        assert all(m.template in held for m in own), split
        others = [m for other, ms in msgs.items() if other != split for m in ms]
        assert not any(m.template in held for m in others), split
    texts = [m.text for ms in msgs.values() for m in ms]
    assert len(texts) == len(set(texts))
    with pytest.raises(ValueError, match="unknown split `dev`"):
        templates.pool("dev")


CHECKS = Path(__file__).resolve().parents[2] / "examples" / "customer_service" / "checks"


@pytest.mark.parametrize(("name", "per_intent"), [("intent.jsonl", 6), ("intent-2.jsonl", 4), ("intent-3.jsonl", 4), ("intent-4.jsonl", 4)])
def test_hand_written_intent_checks_are_valid_and_not_generator_phrasings(name: str, per_intent: int) -> None:
    """Each set of hand-written check messages (README: Benchmarks) parses as classify data
    over the sample's intents, balanced, and shares no sentence of 30+ characters with the
    generator's ask phrasings, main or secondary (of every split, held-out ones included), so
    they measure wording it never produces."""
    data = load_examples(CHECKS / name, "classify", labels=INTENTS, min_per_label=0)
    assert not data.skipped
    assert Counter(e.label for e in data.examples) == {intent: per_intent for intent in INTENTS}
    asks = [a if isinstance(a, str) else a[0] for intent in INTENTS for a in T.ASKS[intent]]
    asks += [a[0] for group in T.SECONDARY.values() for a in group]
    phrasings = [re.sub(r"\{\w+\}", " ", a.lower()) for a in asks]
    for e in data.examples:
        for sentence in re.split(r"(?<=[.?!])\s+", e.text.lower()):
            if len(sentence) >= 30:  # short common sentences ("what am i doing wrong?") may recur
                assert not any(sentence in p for p in phrasings), sentence


@pytest.fixture(scope="module")
def many_messages() -> list[Any]:
    return generate_messages(2000, seed=0, stream="probe-many")


def test_plural_products_take_plural_verbs_as_subjects_only(many_messages: list[Any]) -> None:
    import random

    from loragraph.training.sample import _Builder, _pools, _values

    values = _values(random.Random(0), _pools(0)) | {"product": "winter boots"}
    b = _Builder(values)
    b.template("My {product} still doesn't fit; the refund for the {product} is late.")
    assert b.result() == "My winter boots still don't fit; the refund for the winter boots is late."
    plural = "|".join(map(re.escape, T.PLURAL_PRODUCTS))
    singular_verb = re.compile(rf"\b(?:{plural}) (?:is|was|has|keeps|doesn't|makes|shows)\b", re.IGNORECASE)
    object_of = re.compile(r"\b(?:for|of|about|on|with|from|to|in|at|by) (?:the|my|your|their)? ?$", re.IGNORECASE)
    seen = 0
    for m in many_messages:
        for text in (m.text, m.summary, m.reply):
            for hit in singular_verb.finditer(text):  # "the refund for the earbuds is ..." is right
                assert object_of.search(text[: hit.start()]), text
            seen += bool(re.search(rf"\b(?:{plural}) (?:are|were|have|keep|don't|make|show)\b", text))
    assert seen  # the probe has plural products as subjects


def test_no_greeting_before_an_ask_that_greets(many_messages: list[Any]) -> None:
    greeting = r"(?:hi|hello|hey|hiya|good (?:morning|afternoon|evening))\b"
    twice = re.compile(rf"^\W*{greeting}[^\n.!?]{{0,40}}[.!?,]*\s+{greeting}", re.IGNORECASE)
    assert not [m.text for m in many_messages if twice.search(m.text)]
    assert any(re.match(greeting, m.text, re.IGNORECASE) for m in many_messages if m.intent == "other")


def test_refund_summary_gives_a_return_date_only_from_the_ask(many_messages: list[Any]) -> None:
    refunds = [m for m in many_messages if m.intent == "refund_request" and m.gist is None and "date" in m.used]
    assert any("{date}" not in m.template for m in refunds)  # a date from a detail line ("I ordered it ...")
    for m in refunds:
        assert ("returned" in m.summary) == ("{date}" in m.template), (m.text, m.summary)


def test_summaries_are_third_person_and_name_the_details(messages: list[Any]) -> None:
    for m in messages:
        s = m.summary
        plain = s
        for e in m.entities:
            plain = plain.replace(e["text"], "X")
        assert not re.search(r"\b(I|my|me|I'm)\b", plain), s
        assert len(s) < 400
        if m.intent in ("order_status", "cancel_order", "change_shipping_address", "refund_request") and "order_id" in m.used:
            assert m.used["order_id"] in s, (m.text, s)
        if m.intent == "change_shipping_address" and "address" in m.used:
            assert m.used["address"] in s
        if m.intent == "other":
            assert "no customer-service request" in s


def test_replies_use_the_customers_details(messages: list[Any]) -> None:
    for m in messages:
        r = m.reply
        assert r.startswith(("Hi ", "Hello,", "Dear ")) and r.rstrip().splitlines()[-1] in ("Customer Support", "The Support Team", "Customer Care")
        if m.intent in ("order_status", "cancel_order") and "order_id" in m.used:
            assert m.used["order_id"] in r
        if m.intent == "change_shipping_address" and "address" in m.used:
            assert m.used["address"] in r
        if "first" in m.used or "person" in m.used:
            assert r.startswith(f"Hi {m.values['first']},")


def test_reply_pairs_vary_the_failure(sample_dir: Path) -> None:
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    kinds = manifest["datasets"]["reply_pairs"]["rejected_kinds"]
    assert set(kinds) <= set(REJECTION_KINDS) and len(kinds) >= 4
    assert sum(kinds.values()) == sum(s["count"] for s in manifest["datasets"]["reply_pairs"]["splits"].values())
    rows = _rows(sample_dir / "reply_pairs" / "train.jsonl")
    reply_inputs = {json.dumps(r["input"], sort_keys=True) for r in rows}
    assert len(reply_inputs) == len(rows)
    wrong_id = 0
    for r in rows:
        ids = [e["text"] for e in r["input"]["entities"]["entities"] if e["type"] == "ORDER_ID"]
        if ids and ids[0] in r["chosen"] and ids[0] not in r["rejected"] and re.search(ENTITY_FORMATS["ORDER_ID"], r["rejected"]):
            wrong_id += 1
    assert wrong_id >= 1


def test_documents(sample_dir: Path) -> None:
    docs = _rows(sample_dir / "documents.jsonl")
    assert len(docs) == 30 and len({d["id"] for d in docs}) == 30
    assert all(set(d) == {"id", "text"} and d["text"].strip() for d in docs)
    assert sum(len(d["text"]) > 400 for d in docs) >= 3  # long emails
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    assert manifest["documents"]["labels"]["other"] >= 3  # out-of-scope messages


# --------------------------------------------------------------------------- sizes and CLI


def test_parse_sizes() -> None:
    assert parse_sizes("tiny") == SIZE_PRESETS["tiny"]
    assert parse_sizes("small,intent=50").intent == 50 and parse_sizes("small,intent=50").entities == SIZE_PRESETS["small"].entities
    assert parse_sizes("intent=7,eval_fraction=0.2").eval_fraction == 0.2
    assert SampleSizes(eval_fraction=0.15).split_sizes(700) == {"train": 700, "validation": 150, "test": 150}
    for bad in ("huge", "intent=x", "colour=3", "eval_fraction=0.7"):
        with pytest.raises(ConfigError, match="`--size`"):
            parse_sizes(bad)


def test_cli_sample_and_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import loragraph.cli

    monkeypatch.setattr(loragraph.cli, "_GROUPS", [loragraph.cli._add_data])  # other groups import torch (slow)
    out = tmp_path / "data"
    assert main(["data", "sample", "--out", str(out), "--size", "tiny,reply_pairs=0,documents=0", "--seed", "4"]) == 0
    assert not (out / "reply_pairs").exists() and not (out / "documents.jsonl").exists()
    files = [str(out / "intent" / f"{s}.jsonl") for s in SPLITS]
    assert main(["data", "validate", *files, "--kind", "classify", "--labels", ",".join(INTENTS)]) == 0
    assert "110 valid classify example(s)" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "other"}\n{"text": "b"}\n{"text": "c", "label": "other"}\n')
    assert main(["data", "validate", str(bad), "--kind", "classify"]) == 2
    assert "bad.jsonl:2: " in capsys.readouterr().err
    assert main(["data", "validate", str(bad), "--kind", "classify", "--skip-invalid"]) == 3
    assert "skipped bad.jsonl:2: missing field `label`" in capsys.readouterr().err
    assert main(["data", "validate", files[0], files[0], "--kind", "classify"]) == 2
    assert "leakage train.jsonl:1" in capsys.readouterr().err
