"""Shared builders for the retrieval / index / pipeline / CLI tests: a tiny model, processor and images."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

CAPTIONS = [
    "two white planes parked near the terminal",
    "a green farmland with a river",
    "many cars in a parking lot",
    "a harbor with several boats",
    "dense residential area with trees",
    "a baseball field next to a road",
]


def tiny_model(seed: int = 0):
    from modeling_mtgfe import MTGFEConfig, MTGFEModel

    torch.manual_seed(seed)
    return MTGFEModel(MTGFEConfig.from_preset("tiny")).eval()


def tiny_processor(captions=CAPTIONS):
    from mtgfe.processing import MTGFEImageProcessor, MTGFEProcessor, build_wordpiece_tokenizer

    tokenizer = build_wordpiece_tokenizer(list(captions) * 3, vocab_size=200)
    image_processor = MTGFEImageProcessor(size={"height": 32, "width": 32})
    return MTGFEProcessor(image_processor=image_processor, tokenizer=tokenizer, max_length=16)


def random_images(n: int, seed: int = 0, size: int = 32) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def write_images(folder, n: int, seed: int = 0, nested: bool = True) -> list:
    """PNG/JPEG/TIFF files, some in a subfolder, to exercise the recursive folder scan."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    exts = [".png", ".jpg", ".tif"]
    for i, image in enumerate(random_images(n, seed)):
        sub = folder / "sub" if nested and i % 3 == 2 else folder
        sub.mkdir(exist_ok=True)
        path = sub / f"img_{i:03d}{exts[i % 3]}"
        image.save(path)
        paths.append(path)
    return paths


class InterruptingProcessor:
    """A processor that raises `KeyboardInterrupt` after `n` image batches: a build killed mid-way.

    Everything else (tokenizer, resize target, bands) comes from the real processor, so decoding is exact."""

    def __init__(self, processor, n):
        self.processor, self.n = processor, n
        self.tokenizer = processor.tokenizer
        self.image_processor = self

    def __call__(self, images=None, **kwargs):
        self.n -= 1
        if self.n < 0:
            raise KeyboardInterrupt
        return self.processor.image_processor(images=images, **kwargs)

    def __getattr__(self, name):
        return getattr(self.processor.image_processor, name)
