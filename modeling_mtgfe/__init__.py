"""mtgfe: MTGFE fusion encoder for remote-sensing text–image retrieval, as transformers citizens.

Importing this package registers the config, models, processors and the `rs-retrieval` pipeline with
the transformers Auto classes (idempotently, `exist_ok=True`), and marks the classes for
`register_for_auto_class` so that every `save_pretrained` folder carries flat remote code + `auto_map`
and loads with `trust_remote_code=True` where this package is not installed.
"""

import os

# On small CPU boxes torch's OpenMP threads spin after each op and starve the next matmul (measured
# here: a 5 ms text encode took 272 ms right after an image forward). PASSIVE waiting fixes it; it only
# takes effect before torch is first imported, and an explicit user setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForPreTraining, AutoProcessor  # noqa: E402

from .configuration_efficientnet_lite import EfficientNetLiteConfig
from .configuration_mtgfe import PRESETS, MTGFEConfig
from .modeling_efficientnet_lite import EfficientNetLiteModel
from .modeling_mtgfe import (
    MTGFEForImageTextRetrieval,
    MTGFEImageFeatures,
    MTGFEModel,
    MTGFEModelOutput,
    MTGFEOutput,
    MTGFEPreTrainedModel,
    MTGFETextFeatures,
)


def _register() -> None:
    from mtgfe.processing.image_processing_mtgfe import MTGFEImageProcessor
    from mtgfe.processing.processing_mtgfe import MTGFEProcessor

    AutoConfig.register("mtgfe", MTGFEConfig, exist_ok=True)
    AutoConfig.register(EfficientNetLiteConfig.model_type, EfficientNetLiteConfig, exist_ok=True)
    AutoModel.register(MTGFEConfig, MTGFEModel, exist_ok=True)
    AutoModelForPreTraining.register(MTGFEConfig, MTGFEForImageTextRetrieval, exist_ok=True)
    AutoModel.register(EfficientNetLiteConfig, EfficientNetLiteModel, exist_ok=True)
    AutoImageProcessor.register(MTGFEConfig, image_processor_classes={"pil": MTGFEImageProcessor}, exist_ok=True)
    AutoProcessor.register(MTGFEConfig, MTGFEProcessor, exist_ok=True)

    from .pipeline_mtgfe import register_pipeline

    register_pipeline()

    MTGFEConfig.register_for_auto_class()
    MTGFEModel.register_for_auto_class("AutoModel")
    MTGFEForImageTextRetrieval.register_for_auto_class("AutoModelForPreTraining")
    MTGFEImageProcessor.register_for_auto_class("AutoImageProcessor")
    MTGFEProcessor.register_for_auto_class("AutoProcessor")


_register()

__all__ = [
    "PRESETS",
    "EfficientNetLiteConfig",
    "EfficientNetLiteModel",
    "MTGFEConfig",
    "MTGFEForImageTextRetrieval",
    "MTGFEImageFeatures",
    "MTGFEModel",
    "MTGFEModelOutput",
    "MTGFEOutput",
    "MTGFEPreTrainedModel",
    "MTGFETextFeatures",
]
