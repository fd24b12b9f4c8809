"""The metric modules give known answers on hand-made inputs, and ship as package data."""

from __future__ import annotations

import pytest

from loragraph.training.evaluation import char_iob2, score_classify, score_generate, score_tag
from loragraph.training.metrics import METRIC_NAMES, METRICS_DIR, load_metric


def test_classification_known_answer() -> None:
    m = load_metric("classification")
    # a: tp=2 fp=1 fn=0 -> P=2/3 R=1 F1=0.8 ; b: tp=1 fp=0 fn=1 -> P=1 R=1/2 F1=2/3 ; c: never seen
    out = m.compute(predictions=["a", "a", "a", "b"], references=["a", "a", "b", "b"], labels=["a", "b", "c"])
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["per_label_f1"] == pytest.approx({"a": 0.8, "b": 2 / 3, "c": 0.0})
    assert out["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 0.0) / 3)


def test_score_classify_flattens_per_label() -> None:
    out = score_classify(["x", "y"], ["x", "x"], ["x", "y"])
    assert out["accuracy"] == 0.5
    assert out["f1.x"] == pytest.approx(2 / 3)
    assert out["f1.y"] == 0.0


def test_entities_strict_known_answer() -> None:
    m = load_metric("entities")
    refs = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O"]]
    # PER exact (tp), LOC missed, ORG predicted one token too short (fp + fn), a stray I-LOC
    # without B- is not an entity in strict IOB2
    preds = [["B-PER", "I-PER", "O", "O"], ["O", "B-ORG", "O", "I-LOC"]]
    out = m.compute(predictions=preds, references=refs)
    assert out["entities"] == 3
    assert out["precision"] == pytest.approx(1 / 2)  # PER correct, ORG wrong
    assert out["recall"] == pytest.approx(1 / 3)
    assert out["f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert out["per_type_f1"]["PER"] == 1.0
    assert out["per_type_f1"]["ORG"] == 0.0


def test_entities_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match="predicted tags"):
        load_metric("entities").compute(predictions=[["O"]], references=[["O", "O"]])


def test_rouge_known_answers() -> None:
    m = load_metric("rouge")
    same = m.compute(predictions=["the cat sat on the mat"], references=["the cat sat on the mat"])
    assert same == pytest.approx({"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0})
    none = m.compute(predictions=["dogs bark loudly"], references=["the cat sat"])
    assert none == pytest.approx({"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0})
    # pred 3 tokens all in ref of 6 tokens: P=1, R=1/2 -> F=2/3; bigrams "the cat","cat sat": 2/2 vs 2/5
    part = m.compute(predictions=["the cat sat"], references=["the cat sat on the mat"])
    assert part["rouge1"] == pytest.approx(2 / 3)
    assert part["rouge2"] == pytest.approx(2 * 1 * 0.4 / 1.4)
    assert part["rougeL"] == pytest.approx(2 / 3)
    assert score_generate(["the cat sat", "dogs"], ["the cat sat on the mat", "cats"])["rouge1"] == pytest.approx(1 / 3)


def test_char_iob2_and_exact_span_matching() -> None:
    text = "Order #A-1 for Maria Lopez"
    gold = [{"type": "ORDER_ID", "start": 6, "end": 10}, {"type": "PERSON", "start": 15, "end": 26}]
    tags = char_iob2(text, gold)
    assert tags[6] == "B-ORDER_ID" and tags[7:10] == ["I-ORDER_ID"] * 3 and tags[10] == "O"
    assert score_tag([text], [gold], [gold])["f1"] == 1.0
    off_by_one = [{"type": "ORDER_ID", "start": 5, "end": 10}, {"type": "PERSON", "start": 15, "end": 26}]
    out = score_tag([text], [off_by_one], [gold])
    assert out["precision"] == 0.5 and out["recall"] == 0.5
    assert out["f1.PERSON"] == 1.0 and out["f1.ORDER_ID"] == 0.0
    wrong_type = [{"type": "PRODUCT", "start": 6, "end": 10}]
    assert score_tag([text], [wrong_type], [gold])["f1"] == 0.0
    assert score_tag([text], [[]], [[]])["f1"] == 1.0  # nothing expected, nothing predicted


def test_metric_modules_are_package_data() -> None:
    from setuptools import find_packages

    packages = set(find_packages(str(METRICS_DIR.parents[2]), include=["loragraph*"]))
    for name in METRIC_NAMES:
        assert (METRICS_DIR / name / f"{name}.py").is_file()
        assert f"loragraph.training.metrics.{name}" in packages  # ships as a module of the package


def test_unknown_metric_is_config_error() -> None:
    from loragraph.errors import ConfigError

    with pytest.raises(ConfigError, match="`metric` must be one of"):
        load_metric("bleu")
