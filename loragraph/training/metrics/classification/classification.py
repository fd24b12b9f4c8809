"""Classification metric for loragraph: accuracy, macro-F1 and per-label F1 (scikit-learn)."""

import datasets
import evaluate
from sklearn.metrics import accuracy_score, f1_score

_DESCRIPTION = """Accuracy, macro-averaged F1 and per-label F1 of single-label classification.
Macro-F1 averages over `labels` when given, else over every label seen in predictions or
references (a label never predicted and never expected is not counted)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): predicted labels.
    references (list of str): expected labels.
    labels (list of str, optional): the label set to average over.
Returns:
    accuracy (float), macro_f1 (float), per_label_f1 (dict label -> float), support (int).
Examples:
    >>> m = evaluate.load("loragraph/training/metrics/classification")
    >>> m.compute(predictions=["a", "b"], references=["a", "a"])["accuracy"]
    0.5
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Classification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, labels=None):
        if labels is None:
            labels = sorted(set(references) | set(predictions))
        labels = list(labels)
        if not references:
            return {"accuracy": 0.0, "macro_f1": 0.0, "per_label_f1": {}, "support": 0}
        per_label = f1_score(references, predictions, labels=labels, average=None, zero_division=0)
        return {
            "accuracy": float(accuracy_score(references, predictions)),
            "macro_f1": float(sum(per_label) / len(labels)) if labels else 0.0,
            "per_label_f1": {label: float(v) for label, v in zip(labels, per_label, strict=True)},
            "support": len(references),
        }
