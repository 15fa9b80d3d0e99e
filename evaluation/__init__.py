"""Evaluation (import name `mtgfe.evaluation`): how a trained model is scored.

- `metrics`: tie-aware recall metrics (and the `rs_recall` `evaluate` module in `rs_recall/`);
- `retrieval`: `evaluate_model`, retrieval evaluation of a model on a split;
- `cv`: fold assignment and the summary of cross-validated runs;
- `compositional/`: the compositional benchmark (edit rules, item generation, blind check, evaluation,
  synthetic pairs);
- `cli`: the `mtgfe-eval` and `mtgfe-cv` command lines.

The library modules import data, modeling and processing, never training (docs/LAYOUT.md).
"""
