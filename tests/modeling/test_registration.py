"""Auto-class and `rs-retrieval` registration does not depend on import order.

Each check runs in a fresh interpreter, so the import order is the real one a user's script has. A folder
saved the way `mtgfe-train` saves its `final/` (`checkpointing.save_pretrained_atomic`: model + processor,
no `custom_pipelines`) is the input. `input` is replaced so that a trust-remote-code prompt fails the run
instead of waiting for an answer.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers.isolated import run_fresh


@pytest.fixture(scope="module")
def trained_folder(tmp_path_factory):
    """A tiny model + processor written by the trainer's own save function."""
    from accelerate import Accelerator

    from modeling_mtgfe import MTGFEConfig, MTGFEForPreTraining
    from mtgfe.processing import MTGFEImageProcessor, MTGFEProcessor, build_wordpiece_tokenizer
    from mtgfe.training.checkpointing import save_pretrained_atomic

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("run") / "final"
    tokenizer = build_wordpiece_tokenizer(["two white planes near a terminal", "a river with a bridge"] * 5,
                                          vocab_size=200)
    processor = MTGFEProcessor(MTGFEImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    save_pretrained_atomic(Accelerator(cpu=True), MTGFEForPreTraining(MTGFEConfig.from_preset("tiny")), processor,
                           folder)
    return folder


def test_processor_loads_after_importing_only_the_processing_package(trained_folder):
    """`mtgfe.processing` sits below the model package and registers nothing; its processor still loads a
    trained folder without asking to trust remote code, and without pulling in the model package."""
    result = run_fresh(f"""
        import sys
        from mtgfe.processing import MTGFEProcessor
        processor = MTGFEProcessor.from_pretrained({str(trained_folder)!r})
        assert type(processor).__name__ == "MTGFEProcessor" and processor.max_length == 40
        assert processor.image_processor.size.height == 32
        assert "modeling_mtgfe" not in sys.modules
        print("PROCESSOR OK")
        """)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "PROCESSOR OK" in result.stdout


# The modules a script starts from: the model package itself, and a library module of each package above it.
# Importing any of them registers the Auto classes and the task (`modeling_mtgfe._register`, the one place).
ENTRY_IMPORTS = [
    "import modeling_mtgfe",
    "import mtgfe.data.loading",
    "import mtgfe.evaluation.retrieval",
    "import mtgfe.training.train",
    "import mtgfe.search.gallery_index",
    "import mtgfe.hub_cards.publish",
]


@pytest.mark.parametrize("entry", ENTRY_IMPORTS)
def test_pipeline_and_auto_classes_load_a_trained_folder_after_any_entry_import(trained_folder, entry):
    result = run_fresh(f"""
        {entry}
        from transformers import AutoModel, AutoProcessor, pipeline
        folder = {str(trained_folder)!r}
        assert type(AutoModel.from_pretrained(folder)).__name__ == "MTGFEModel"
        assert type(AutoProcessor.from_pretrained(folder)).__name__ == "MTGFEProcessor"
        pipe = pipeline("rs-retrieval", model=folder)
        assert type(pipe).__name__ == "MTGFERetrievalPipeline"
        print("PIPELINE OK")
        """)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "PIPELINE OK" in result.stdout
