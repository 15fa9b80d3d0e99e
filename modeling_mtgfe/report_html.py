"""Deprecated location of `mtgfe.search.report_html` (the HTML report moved out of the model folder, issue #12).

A thin shim, not part of the Hub remote-code set (no modeling/config file imports it): importing it warns
once and makes `modeling_mtgfe.report_html` the very module `mtgfe.search.report_html`, so old imports, entry points
and monkeypatches keep working. It will be removed in a later release.
"""

import sys
import warnings

warnings.warn(
    "modeling_mtgfe.report_html moved to mtgfe.search.report_html; import it from there "
    "(the old path will be removed in a later release).",
    DeprecationWarning,
    stacklevel=2,
)

from mtgfe.search import report_html as _moved  # noqa: E402

sys.modules[__name__] = _moved
