"""Datasets (import name `mtgfe.data`): the bottom of the training/evaluation stack.

- `registry`: the RS benchmarks this package knows (names, aliases, splits, where their files live);
- `annotations`: reading benchmark annotations and caption files into `datasets.Dataset` rows;
- `loading`: `load_dataset_split`, the one way every caller picks between synthetic, a user's file and
  a benchmark;
- `synthetic`: the procedural scene generator (offline demos and tests);
- `views`: deterministic and random image views (colour jitter, crops) shared by training and evaluation.

Nothing here imports training, evaluation or search (docs/LAYOUT.md).
"""
