# Copyright 2025 The MTGFE authors. Licensed under the Apache License, Version 2.0.
"""Image processor for MTGFE.

`MTGFEImageProcessor` is the stock transformers PIL/NumPy pipeline (resize → rescale → normalize) with
one change: every decodable input goes through [`load_image`] first, so file paths, 16-bit TIFFs,
palette PNGs and multi-band arrays work directly in `processor(images=[...])` and give the same
pixels as the training loaders.

It subclasses `PilBackend` explicitly (see docs: in transformers v5 a plain `XxxImageProcessor` is the
torchvision backend, and torchvision is not a dependency of mtgfe). The class name deliberately does
not end in "Pil": `PilBackend.to_dict()` strips that suffix from `image_processor_type`, which would
break loading by class name.

This file is shipped as Hub remote code, so it imports siblings with single-dot relative imports only.
"""

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.utils import is_torch_tensor, logging

from .image_decoding import load_image


logger = logging.get_logger(__name__)


class MTGFEImageProcessor(PilBackend):
    r"""
    Constructs an MTGFE image processor (PIL/NumPy backend, CPU only).

    Defaults follow the offline backbones (EfficientNet-Lite0, DINOv2, ViT), which are all trained
    with ImageNet normalisation; 256x256 is the native size of UCM / RSICD / RSITMD tiles, so most
    benchmark images are not resampled at all.

    Args:
        bands (`Sequence[int]`, *optional*):
            Three band indices `(r, g, b)` taken from multi-band inputs (more than 3 bands, e.g. RGB+NIR);
            see [`load_image`]. Defaults to `(0, 1, 2)`. Stored in the config because the band layout is a
            property of the sensor/dataset a checkpoint was trained on.
        do_resize (`bool`, *optional*, defaults to `True`): Resize to `size`.
        size (`dict[str, int]`, *optional*, defaults to `{"height": 256, "width": 256}`): Output size.
        resample (`PILImageResampling`, *optional*, defaults to `BICUBIC`): Resampling filter.
        do_rescale (`bool`, *optional*, defaults to `True`): Multiply by `rescale_factor` (1/255).
        do_normalize (`bool`, *optional*, defaults to `True`): Normalise with `image_mean` / `image_std`.
        image_mean, image_std (`list[float]`, *optional*, default to ImageNet's): Normalisation statistics.
        do_convert_rgb (`bool`, *optional*, defaults to `True`): Convert to RGB (a no-op after `load_image`).

    Input handling (`fetch_images`):
        - paths (`str` / `os.PathLike`), encoded `bytes` and `PIL.Image` → [`load_image`];
        - integer / boolean numpy arrays `(H, W)`, `(H, W, C)` or a batch `(B, H, W, C)` → [`load_image`]
          (16-bit stretch, band selection); `(C, H, W)` with `C` in 1, 3, 4 is moved to channels last;
        - floating-point numpy arrays and torch tensors are taken as already-decoded pixels and follow
          the standard transformers semantics untouched (call `load_image` yourself to stretch them).
        Paths are local files only: URLs are not fetched.
    """

    model_input_names = ["pixel_values"]

    do_resize = True
    size = {"height": 256, "width": 256}
    resample = PILImageResampling.BICUBIC
    do_center_crop = False
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    do_convert_rgb = True

    def __init__(self, bands: Sequence[int] | None = None, **kwargs):
        if bands is not None:
            if isinstance(bands, (str, bytes)) or not isinstance(bands, Sequence) or len(bands) != 3:
                raise ValueError(f"`bands` must be three band indices (r, g, b), got {bands!r}.")
            if any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in bands):
                raise ValueError(f"`bands` must contain non-negative integers, got {bands!r}.")
            bands = list(bands)
        super().__init__(**kwargs)
        self.bands = bands

    def fetch_images(self, image_url_or_urls, target_size=None):
        """Decode paths / bytes / PIL images / integer arrays with [`load_image`] (recursing into lists).

        Called by `preprocess` (through `_prepare_image_like_inputs`, with that call's `do_resize` / `size`)
        and by processors / pipelines before processing, so every entry point sees the RS-robust decoding.
        Encoded inputs (paths, bytes) are decoded reduced towards the resize target (`target_size`, by
        default this processor's `size` when `do_resize`), see `load_image(target_size=...)`: a 6000 px
        JPEG is never materialised at full resolution just to be resized to 256. Idempotent on its output.
        """
        if target_size is None:
            target_size = self.decode_target(self.do_resize, self.size)
        if isinstance(image_url_or_urls, (list, tuple)):
            return [self.fetch_images(item, target_size=target_size) for item in image_url_or_urls]
        return self._decode_one(image_url_or_urls, target_size)

    def _prepare_image_like_inputs(self, images, *args, expected_ndims: int = 3, **kwargs):
        # Decode here with the per-call resize target; the base class's fetch_images pass is then a no-op.
        target_size = self.decode_target(kwargs.get("do_resize"), kwargs.get("size"))
        images = self.fetch_images(images, target_size=target_size or False)
        return super()._prepare_image_like_inputs(images, *args, expected_ndims=expected_ndims, **kwargs)

    @staticmethod
    def decode_target(do_resize, size):
        """`(height, width)` that decoding may reduce towards (never below 2x), or None (no resize)."""
        if not do_resize or size is None:
            return None
        get = size.get if hasattr(size, "get") else (lambda key, default=None: getattr(size, key, default))
        if get("height") and get("width"):
            return int(get("height")), int(get("width"))
        for key in ("shortest_edge", "longest_edge"):
            if get(key):  # conservative: both sides are kept at least 2x this edge
                return int(get(key)), int(get(key))
        if get("max_height") and get("max_width"):
            return int(get("max_height")), int(get("max_width"))
        return None

    def _decode_one(self, image, target_size=None):
        target_size = target_size or None  # False: "no resize in this call", not "use the default"
        if isinstance(image, (str, os.PathLike, bytes, bytearray)):
            return load_image(image, bands=self.bands, target_size=target_size)
        if isinstance(image, Image.Image):
            return load_image(image, bands=self.bands)
        if isinstance(image, np.ndarray):
            if np.issubdtype(image.dtype, np.floating):
                return image
            if image.ndim == 4:
                return [self._decode_one(frame) for frame in image]
            if image.ndim == 3 and image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4):
                image = np.moveaxis(image, 0, -1)
            return load_image(image, bands=self.bands)
        if is_torch_tensor(image):
            return image
        raise TypeError(
            f"Unsupported image input of type {type(image).__name__}; expected a path, bytes, a PIL image, "
            "a numpy array or a torch tensor."
        )


__all__ = ["MTGFEImageProcessor"]
