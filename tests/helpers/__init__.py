"""Test helpers shared across test folders (import as `tests.helpers.<module>`): `paths` (repo root, shared
data folder), `retrieval` (tiny models, processors and images), `isolated` (fresh interpreters without the package), `training` (the small synthetic run, exact-resume comparison)."""
