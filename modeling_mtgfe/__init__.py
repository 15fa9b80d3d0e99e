"""mtgfe: MTGFE fusion encoder for remote-sensing text–image retrieval, as transformers citizens.

Importing this package registers the config, models, processors and the `rs-retrieval` pipeline with
the transformers Auto classes (idempotently, `exist_ok=True`), and marks the classes for
`register_for_auto_class` so that every `save_pretrained` folder carries flat remote code + `auto_map`
and loads with `trust_remote_code=True` where this package is not installed.

The folder holds the model only (configs, models, losses, the pipeline and its scoring core
`retrieval.py`, converters); the search application (gallery index, CLIs, reports) is `mtgfe.search`.

Importing the package changes no environment variable: `OMP_WAIT_POLICY=PASSIVE` (which matters on small
CPU boxes) is set by the console scripts, and library users export it themselves (README, "Search").
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForPreTraining, AutoProcessor

# `mtgfe.processing` never imports `modeling_mtgfe` (the Auto registration lives here): no cycle.
from mtgfe.processing.image_processing_mtgfe import MTGFEImageProcessor
from mtgfe.processing.processing_mtgfe import MTGFEProcessor

from .configuration_efficientnet_lite import EfficientNetLiteConfig
from .configuration_mtgfe import PRESETS, MTGFEConfig
from .modeling_efficientnet_lite import EfficientNetLiteModel
from .modeling_mtgfe import (
    MTGFEForPreTraining,
    MTGFEGroundingOutput,
    MTGFEImageFeatures,
    MTGFEModel,
    MTGFEModelOutput,
    MTGFEOutput,
    MTGFEPreTrainedModel,
    MTGFETextFeatures,
)
from .pipeline_mtgfe import register_pipeline


def _register() -> None:
    AutoConfig.register("mtgfe", MTGFEConfig, exist_ok=True)
    AutoConfig.register(EfficientNetLiteConfig.model_type, EfficientNetLiteConfig, exist_ok=True)
    AutoModel.register(MTGFEConfig, MTGFEModel, exist_ok=True)
    AutoModelForPreTraining.register(MTGFEConfig, MTGFEForPreTraining, exist_ok=True)
    AutoModel.register(EfficientNetLiteConfig, EfficientNetLiteModel, exist_ok=True)
    AutoImageProcessor.register(MTGFEConfig, image_processor_classes={"pil": MTGFEImageProcessor}, exist_ok=True)
    AutoProcessor.register(MTGFEConfig, MTGFEProcessor, exist_ok=True)
    register_pipeline()

    MTGFEConfig.register_for_auto_class()
    MTGFEModel.register_for_auto_class("AutoModel")
    MTGFEForPreTraining.register_for_auto_class("AutoModelForPreTraining")
    MTGFEImageProcessor.register_for_auto_class("AutoImageProcessor")
    MTGFEProcessor.register_for_auto_class("AutoProcessor")


_register()


__all__ = [
    "PRESETS",
    "EfficientNetLiteConfig",
    "EfficientNetLiteModel",
    "MTGFEConfig",
    "MTGFEForPreTraining",
    "MTGFEGroundingOutput",
    "MTGFEImageFeatures",
    "MTGFEModel",
    "MTGFEModelOutput",
    "MTGFEOutput",
    "MTGFEPreTrainedModel",
    "MTGFETextFeatures",
]
