"""Training (import name `mtgfe.training`): the config schema and recipes (`configs/*.yaml`), `train()`,
checkpointing, the backbone cache, collate, perturbation negatives, a run's splits, `mtgfe-train` (`cli`) and
the demo. Datasets live in `mtgfe.data`, scoring in `mtgfe.evaluation` (docs/LAYOUT.md)."""
