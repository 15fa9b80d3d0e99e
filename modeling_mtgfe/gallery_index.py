"""Deprecated location of `mtgfe.search.gallery_index` (the gallery index moved out of the model folder, issue #12).

A thin shim, not part of the Hub remote-code set (no modeling/config file imports it): importing it warns
once and makes `modeling_mtgfe.gallery_index` the very module `mtgfe.search.gallery_index`, so old imports, entry points
and monkeypatches keep working. It will be removed in a later release.
"""

import sys
import warnings

warnings.warn(
    "modeling_mtgfe.gallery_index moved to mtgfe.search.gallery_index; import it from there "
    "(the old path will be removed in a later release).",
    DeprecationWarning,
    stacklevel=2,
)

from mtgfe.search import gallery_index as _moved  # noqa: E402

sys.modules[__name__] = _moved
