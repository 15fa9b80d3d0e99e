"""``evaluate`` wrapper around :func:`mtgfe.evaluation.metrics.retrieval_metrics`.

Load it with ``mtgfe.evaluation.metrics.load_rs_recall_metric()`` (or ``evaluate.load`` on this
folder; the file name must match the folder name, docs/HF_PITFALLS.md §8). The computation lives in
``mtgfe.evaluation.metrics`` so that this module and plain function calls cannot drift apart.
"""

import datasets
import evaluate
import numpy as np

from mtgfe.hub_cards.cards import MTGFE_CITATION
from mtgfe.evaluation.metrics import TIE_RULES, retrieval_metrics

_DESCRIPTION = """\
Image-text retrieval Recall@K (image->text and text->image) and mR (mean of the recalls), in percent,
with the field's protocol (an image hits when any of its captions is in the top K; a caption has
exactly one ground-truth image) and an explicit rule for tied scores: "expected" (exact expectation
under random tie order, default), "pessimistic", "optimistic" or "argsort" (np.argsort(row)[::-1],
as in GaLR/HarMA/ALBEF code).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one row per image: the scores of that image against every caption (N_txt floats,
        higher = better). All rows must have the same length.
    references: one list per image: the indices (columns of `predictions`) of its ground-truth
        captions. Every caption index must appear in exactly one list.
    ks: cut-offs K (default (1, 5, 10)).
    tie_rule: one of "expected", "pessimistic", "optimistic", "argsort".
    score_dtype: dtype the rows are cast to before ranking (default float64, the stored dtype).
        Pass "float32" to make tie_rule="argsort" sort exactly what float32 model code sorts.
Returns:
    dict with `i2t_R@K`, `t2i_R@K`, `mR`, `tie_rule`, `num_images`, `num_texts` and `ties`.
Examples:
    >>> metric = load_rs_recall_metric()
    >>> metric.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[[0], [1]], ks=[1])["mR"]
    100.0
"""

_CITATION = MTGFE_CITATION  # one source for the citation (hub_cards.cards)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RsRecall(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # float64 stores float32 model scores losslessly, so no new ties are created on the way in.
            features=datasets.Features(
                {
                    "predictions": datasets.List(datasets.Value("float64")),
                    "references": datasets.List(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references, ks=(1, 5, 10), tie_rule="expected", score_dtype=None):
        if tie_rule not in TIE_RULES:
            raise ValueError(f"tie_rule must be one of {TIE_RULES}, got {tie_rule!r}.")
        lengths = {len(row) for row in predictions}
        if len(lengths) != 1:
            raise ValueError(
                f"predictions: every image row must score the same captions, got row lengths {sorted(lengths)}."
            )
        scores = np.asarray(predictions, dtype=score_dtype or np.float64)
        n_txt = scores.shape[1]
        txt2img = np.full(n_txt, -1, dtype=np.int64)
        for i, caps in enumerate(references):
            if not caps:
                raise ValueError(f"references[{i}] is empty: image {i} needs at least one ground-truth caption.")
            for j in caps:
                if not 0 <= j < n_txt:
                    raise ValueError(f"references[{i}] contains caption index {j}, out of range for {n_txt} captions.")
                if txt2img[j] != -1:
                    raise ValueError(f"caption {j} is listed for image {int(txt2img[j])} and image {i} in references.")
                txt2img[j] = i
        missing = np.nonzero(txt2img < 0)[0]
        if missing.size:
            raise ValueError(
                f"references: caption index(es) {missing[:10].tolist()} belong to no image; every column of "
                "predictions needs exactly one ground-truth image."
            )
        return retrieval_metrics(scores, txt2img, img2txt=[list(c) for c in references], ks=ks, tie_rule=tie_rule)
