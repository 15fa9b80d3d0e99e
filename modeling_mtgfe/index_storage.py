"""Deprecated location of `mtgfe.search.index_storage` (the index storage moved out of the model folder, issue #12).

A thin shim, not part of the Hub remote-code set (no modeling/config file imports it): importing it warns
once and makes `modeling_mtgfe.index_storage` the very module `mtgfe.search.index_storage`, so old imports, entry points
and monkeypatches keep working. It will be removed in a later release.
"""

import sys
import warnings

warnings.warn(
    "modeling_mtgfe.index_storage moved to mtgfe.search.index_storage; import it from there "
    "(the old path will be removed in a later release).",
    DeprecationWarning,
    stacklevel=2,
)

from mtgfe.search import index_storage as _moved  # noqa: E402

sys.modules[__name__] = _moved
