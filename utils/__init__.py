"""Small helpers shared by training, search and Hub tooling (import name `mtgfe.utils`).

Nothing here imports torch or transformers: these are the leaves of the import graph, so any layer may
use them without creating a cycle. The model's remote-code files (`modeling_mtgfe/`) never import from
here, because they must load from a Hub folder where this package is not installed.
"""

from .io import FileFormatError, atomic_path, atomic_write_json, atomic_write_text, load_yaml_text, read_json, read_yaml

__all__ = ["FileFormatError", "atomic_path", "atomic_write_json", "atomic_write_text", "load_yaml_text", "read_json",
           "read_yaml"]
