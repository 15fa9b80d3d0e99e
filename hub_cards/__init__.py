"""Model cards, dataset cards and benchmark export for the Hugging Face Hub.

Names are resolved lazily so that ``import mtgfe.hub_cards`` stays cheap: ``datasets`` and
``huggingface_hub`` are imported only by the function that needs them.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "render_model_card": "cards",
    "render_dataset_card": "cards",
    "load_eval_results": "cards",
    "benchmark_info": "card_facts",
    "BENCHMARKS": "card_facts",
    "MTGFE_CITATION": "cards",
    "export_benchmark_to_parquet": "dataset_export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
