# Copyright 2025 The MTGFE authors. Licensed under the Apache License, Version 2.0.
"""Pre-processing for MTGFE (import name `mtgfe.processing`).

- [`load_image`]: remote-sensing-robust decoding (16-bit stretch, palette/alpha, multi-band) to RGB.
- [`MTGFEImageProcessor`]: transformers PIL-backend image processor that decodes with `load_image`.
- [`MTGFEProcessor`]: `ProcessorMixin` bundling the image processor and a BERT WordPiece tokenizer.
- [`build_wordpiece_tokenizer`] / [`load_default_tokenizer`]: offline tokenizers.

Auto-class registration (`AutoImageProcessor` / `AutoProcessor`) lives with `MTGFEConfig` in
`modeling_mtgfe`, not here.
"""

from .image_decoding import (
    DEFAULT_BANDS,
    STRETCH_PERCENTILES,
    ImageDecodeError,
    ImageFileNotFoundError,
    load_image,
    percentile_stretch,
)
from .image_processing_mtgfe import MTGFEImageProcessor
from .processing_mtgfe import MTGFEProcessor
from .tokenization_mtgfe import (
    SPECIAL_TOKENS,
    build_wordpiece_tokenizer,
    default_tokenizer_path,
    load_default_tokenizer,
)


__all__ = [
    "DEFAULT_BANDS",
    "STRETCH_PERCENTILES",
    "SPECIAL_TOKENS",
    "ImageDecodeError",
    "ImageFileNotFoundError",
    "MTGFEImageProcessor",
    "MTGFEProcessor",
    "build_wordpiece_tokenizer",
    "default_tokenizer_path",
    "load_default_tokenizer",
    "load_image",
    "percentile_stretch",
]
