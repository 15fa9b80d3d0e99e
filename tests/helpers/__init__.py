"""Test helpers shared across test folders (import as `tests.helpers.<module>`): `paths` (repo root, shared
data folder), `retrieval` (tiny models, processors and images), `subprocess` (fresh-interpreter runs)."""
