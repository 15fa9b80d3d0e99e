"""Building or loading the frozen backbone's token cache for a run (`data.backbone_cache`).

`collate.py` holds the cache itself (`BackboneCache`: build, save, load, fingerprint) and the collator
that reads it; this module is the run-level orchestration the trainer calls once: which images, which
file, who builds it when several processes start at once, and the check that the file matches the
run. Kept out of train.py so the training loop reads top to bottom without it.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from transformers.utils import logging

from mtgfe.data import views
from mtgfe.utils.io import FileFormatError

from .collate import BackboneCache, cache_fingerprint, image_sources
from .config import ConfigError, TrainConfig


logger = logging.get_logger(__name__)


def load_or_build_backbone_cache(cfg: TrainConfig, model, processor, train_rows, accelerator, pool_rows=None):
    """The frozen backbone's tokens of every training image and cached view (`data.backbone_cache`).

    Loaded from `dir` when a file with the same fingerprint exists (images, size, view policy, slots,
    cache seed, backbone weights), else encoded once (main process first when persisted, the other
    ranks then load the file) and written atomically. Costs ~(1 + num_views) x 11 ms per UCM image
    with EfficientNet-Lite0 on 2 cores, once; every training step after that skips the backbone.
    With `data.cv`, `pool_rows` (every pooled image, pool ids) is what is cached and fingerprinted, so
    all folds share one file; the cache must hold every training image (it may hold more).
    """
    c = cfg.data.backbone_cache
    dtype = getattr(torch, c.dtype)
    sources, image_ids = image_sources(train_rows if pool_rows is None else pool_rows)
    view_config = {**cfg.views.mvjrc, "image_size": cfg.data.image_size}
    transform = views.MultiViewTransform(config=views.ViewConfig.from_dict(view_config), num_views=1)
    vision = accelerator.unwrap_model(model).mtgfe.vision_model
    key = cache_fingerprint(sources, cfg.data.image_size, transform.config.to_dict(), c.num_views, c.seed, vision)
    path = Path(c.dir).expanduser() / f"backbone-{key}-{c.dtype}.safetensors" if c.dir else None
    start = time.perf_counter()

    def build():
        cache = BackboneCache.build(model, processor, sources, image_ids, transform, c.num_views, cache_seed=c.seed,
                                    batch_size=c.batch_size, dtype=dtype,
                                    progress=accelerator.is_local_main_process and cfg.log.progress_bar)
        if path is not None:
            cache.save(path, {"fingerprint": key, "num_views": c.num_views, "image_size": cfg.data.image_size})
        return cache

    cache = None
    if path is not None and path.is_file():
        try:
            cache, how = BackboneCache.load(path), f"loaded {path}"
        except FileFormatError as error:  # derived data: rebuilding it gives the same tokens
            if accelerator.num_processes > 1:
                raise ConfigError(f"{error}; delete it (it is rebuilt on the next start)") from None
            logger.warning("%s: rebuilding it", error)
    if cache is None and path is not None and accelerator.num_processes > 1:
        cache = build() if accelerator.is_main_process else None
        accelerator.wait_for_everyone()
        cache, how = (cache or BackboneCache.load(path)), f"built {path}"
    elif cache is None:
        cache, how = build(), (f"built {path}" if path else "built (in memory only)")
    missing = sorted({int(i) for i in train_rows["image_id"]} - set(cache.image_ids))
    if missing:
        raise ConfigError(f"backbone cache {path or '(in memory)'} lacks {len(missing)} of the training images (ids "
                          f"{missing[:5]}{', ...' if len(missing) > 5 else ''}): it was built for other images; delete it")
    accelerator.print(f"backbone cache {how}: {tuple(cache.tokens.shape)} {c.dtype}, "
                      f"{cache.tokens.numel() * cache.tokens.element_size() / 2**20:.0f} MiB, "
                      f"{time.perf_counter() - start:.1f} s")
    return cache
