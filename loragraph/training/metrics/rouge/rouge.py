"""ROUGE metric for loragraph: ROUGE-1/2/L F-measures by rouge_score, averaged over examples."""

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = """ROUGE-1, ROUGE-2 and ROUGE-L (longest common subsequence, sentence-level, not
`rougeLsum`) F-measures from Google's `rouge_score` with the Porter stemmer and its default
tokenizer (lowercase, alphanumeric tokens), averaged over examples (no bootstrap)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): generated texts.
    references (list of str): reference texts.
Returns:
    rouge1, rouge2, rougeL (float in [0, 1]).
"""

_TYPES = ("rouge1", "rouge2", "rougeL")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, use_stemmer=True):
        scorer = rouge_scorer.RougeScorer(list(_TYPES), use_stemmer=use_stemmer)
        totals = {t: 0.0 for t in _TYPES}
        for pred, ref in zip(predictions, references, strict=True):
            scores = scorer.score(ref, pred)
            for t in _TYPES:
                totals[t] += scores[t].fmeasure
        n = max(len(references), 1)
        return {t: totals[t] / n for t in _TYPES}
