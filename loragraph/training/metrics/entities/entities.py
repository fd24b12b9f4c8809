"""Entity metric for loragraph: entity-level precision/recall/F1 by seqeval, strict IOB2."""

import datasets
import evaluate
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

_DESCRIPTION = """Entity-level precision, recall and F1 (micro-averaged over entities) computed by
seqeval in `strict` mode with the IOB2 scheme: a predicted entity is correct only when its
type and its exact first and last position equal an expected entity (no partial credit;
an `I-` tag without a `B-` does not start an entity). Per-type F1 is reported too.
loragraph evaluates tag adapters on character-level IOB2 sequences built from character
spans, which makes this exact span matching on (type, start, end)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of str): predicted IOB2 tags per sequence (`O`, `B-TYPE`, `I-TYPE`).
    references (list of list of str): expected IOB2 tags, same lengths.
Returns:
    precision, recall, f1 (float, micro over entities), per_type_f1 (dict type -> float),
    entities (int, number of expected entities).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Entities(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references):
        predictions = [list(p) for p in predictions]
        references = [list(r) for r in references]
        for i, (p, r) in enumerate(zip(predictions, references, strict=False)):
            if len(p) != len(r):
                raise ValueError(f"sequence {i}: {len(p)} predicted tags but {len(r)} expected tags")
        kw = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
        n_expected = sum(sum(1 for t in r if t.startswith("B-")) for r in references)
        n_predicted = sum(sum(1 for t in p if t.startswith("B-")) for p in predictions)
        if n_expected == 0 and n_predicted == 0:
            return {"precision": 1.0, "recall": 1.0, "f1": 1.0, "per_type_f1": {}, "entities": 0}
        report = classification_report(references, predictions, output_dict=True, **kw)
        per_type = {
            k: float(v["f1-score"]) for k, v in report.items() if not k.endswith(" avg") and isinstance(v, dict)
        }
        return {
            "precision": float(precision_score(references, predictions, **kw)),
            "recall": float(recall_score(references, predictions, **kw)),
            "f1": float(f1_score(references, predictions, **kw)),
            "per_type_f1": per_type,
            "entities": n_expected,
        }
