"""Step 1 of the two-stage retrieval (see `retrieval.py`): feature containers and the encoders.

`encode_images` / `encode_texts` run every image / *distinct* caption once; the fusion tokens / text states
they keep are what `retrieval.score_pairs` re-ranks with. Split from `retrieval.py` to keep files small;
`retrieval` re-exports every name here, so `from modeling_mtgfe.retrieval import encode_images` still works.

This file travels as Hub remote code: third-party imports and single-dot siblings only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

try:  # tqdm ships with transformers; the guard only keeps progress bars optional
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

# ----------------------------------------------------------------------------------------------- features
@dataclass
class ImageFeatures:
    """Encoded gallery images.

    embeds (`(N, E)` float32): L2-normalised filter embeddings.
    tokens (`(N, T, H)` or `None`): fusion tokens; memory per image is `T*H*bytes` (small preset: 64×384×4 =
        96 KiB in float32), against `E*4` (1 KiB) for the embedding. Anything indexable by a `LongTensor`
        of rows works too (e.g. a memory-mapped store), since re-ranking only gathers candidate rows.
    """

    embeds: torch.Tensor
    tokens: Any = None

    def __len__(self) -> int:
        return int(self.embeds.shape[0])


@dataclass
class TextFeatures:
    """Encoded captions, one row per *distinct* caption.

    embeds (`(M, E)` float32), states (`(M, T, H)`), attention_mask (`(M, T)`): one row per distinct input.
    inverse (`(N,)` int64): row of each input text (`embeds[inverse]` is per input).
    texts (`list[str]`): a representative string per distinct row.
    """

    embeds: torch.Tensor
    states: torch.Tensor | None
    attention_mask: torch.Tensor | None
    inverse: torch.Tensor
    texts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.inverse.shape[0])

    @property
    def num_distinct(self) -> int:
        return int(self.embeds.shape[0])


# ----------------------------------------------------------------------------------------------- helpers
def retrieval_base(model):
    """The module holding the retrieval API: `MTGFEModel` itself or `.mtgfe` of the pretraining model."""
    base = getattr(model, "mtgfe", model)
    for name in ("image_key_values", "compute_itm_scores", "get_image_retrieval_features", "get_text_retrieval_features"):
        if not hasattr(base, name):
            raise TypeError(f"{type(model).__name__} is not an MTGFE model: it has no `{name}`.")
    return base


def device_and_dtype(model) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters())
    return param.device, param.dtype


def progress_bar(iterable, enabled: bool, **kwargs):
    """`tqdm(iterable)` when `enabled` and tqdm is installed, else `iterable` (used by the search index too)."""
    if enabled and tqdm is not None:
        return tqdm(iterable, **kwargs)
    return iterable


def pixel_values_of(processor, images: Sequence[Any]) -> torch.Tensor:
    """Decode and normalise a batch with the processor (which decodes paths through `load_image`)."""
    image_processor = getattr(processor, "image_processor", processor)
    return image_processor(images=list(images), return_tensors="pt")["pixel_values"]


# ----------------------------------------------------------------------------------------------- encoding
@torch.no_grad()
def encode_images(
    model,
    processor,
    images: Sequence[Any],
    batch_size: int = 32,
    keep_tokens: bool = True,
    progress: bool = True,
    tokens_dtype: torch.dtype | None = None,
) -> ImageFeatures:
    """Filter embeddings (and fusion tokens) of `images`: PIL images, paths, bytes or arrays.

    Decoding goes through the processor, hence `load_image` (16-bit stretch, multi-band, ...); an
    unreadable file raises the decoder's error, which names the file.
    Tokens are kept on the CPU (`tokens_dtype`, default the model dtype) so a large gallery does not
    pin accelerator memory; re-ranking moves only candidate rows to the model.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    images = list(images)
    if not images:
        raise ValueError("encode_images got no images.")
    base = retrieval_base(model)
    device, dtype = device_and_dtype(base)
    embeds, tokens = [], []
    steps = range(0, len(images), batch_size)
    for start in progress_bar(steps, progress, desc="encoding images", unit="batch"):
        pixel_values = pixel_values_of(processor, images[start : start + batch_size]).to(device=device, dtype=dtype)
        out = base.get_image_retrieval_features(pixel_values)
        embeds.append(out.image_embeds.float().cpu())
        if keep_tokens:
            tokens.append(out.image_tokens.to(dtype=tokens_dtype or out.image_tokens.dtype).cpu())
    return ImageFeatures(embeds=torch.cat(embeds), tokens=torch.cat(tokens) if keep_tokens else None)


@torch.no_grad()
def encode_texts(
    model,
    processor,
    texts: Sequence[str],
    batch_size: int = 128,
    keep_states: bool = True,
    trim_padding: bool = True,
    progress: bool = False,
) -> TextFeatures:
    """Encode each distinct caption once; `inverse` maps every input to its row.

    Why dedupe: identical captions must get bit-identical scores so ties are real (docs/METHOD.md §6b), and
    UCM/RSICD repeat many captions word for word (UCM test: 1,050 captions, 377 distinct), so it also
    saves work. Captions are deduplicated by string, then by token ids (two strings the tokenizer maps
    to the same ids, e.g. differing only in case, are the same model input).

    The processor pads to a fixed length, so an encoding does not depend on batch neighbours. With
    `trim_padding=True` the kept states are then cut to the longest caption *of this set*: fusion cost
    grows with the text length (40 padded vs ~15 real tokens on RS captions), and every pair fused
    from one `TextFeatures` shares the same length, so ties inside a call stay exact.
    """
    if isinstance(texts, str):
        raise TypeError("encode_texts expects a list of strings; wrap a single query in a list.")
    texts = list(texts)
    if not texts:
        raise ValueError("encode_texts got no texts.")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{index}] is a {type(text).__name__}, expected a string: {text!r}.")
        if not text.strip():
            raise ValueError(f"texts[{index}] is an empty or blank string.")
    base = retrieval_base(model)
    device, _ = device_and_dtype(base)
    by_string: dict[str, int] = {}
    string_inverse = [by_string.setdefault(text, len(by_string)) for text in texts]
    unique_strings = list(by_string)

    if not hasattr(processor, "tokenizer"):
        raise TypeError(f"{type(processor).__name__} has no tokenizer: pass an MTGFEProcessor.")
    encoded = processor(text=unique_strings, return_tensors="pt")
    input_ids, mask = encoded["input_ids"], encoded["attention_mask"]
    # Second dedupe on token ids: equal model inputs must be one row.
    by_ids: dict[tuple, int] = {}
    id_rows = [by_ids.setdefault(tuple(row.tolist()), len(by_ids)) for row in input_ids]
    keep = sorted({row: i for i, row in reversed(list(enumerate(id_rows)))}.values())
    input_ids, mask = input_ids[keep], mask[keep]
    inverse = torch.tensor([id_rows[s] for s in string_inverse], dtype=torch.long)

    embeds, states = [], []
    steps = range(0, input_ids.shape[0], batch_size)
    for start in progress_bar(steps, progress, desc="encoding texts", unit="batch"):
        ids = input_ids[start : start + batch_size].to(device)
        out = base.get_text_retrieval_features(ids, mask[start : start + batch_size].to(device))
        embeds.append(out.text_embeds.float().cpu())
        if keep_states:
            states.append(out.text_states.cpu())
    text_states = torch.cat(states) if keep_states else None
    if keep_states and trim_padding:
        length = int(mask.sum(1).max())
        text_states, mask = text_states[:, :length].contiguous(), mask[:, :length].contiguous()
    return TextFeatures(
        embeds=torch.cat(embeds),
        states=text_states,
        attention_mask=mask if keep_states else None,
        inverse=inverse,
        texts=[unique_strings[i] for i in keep],
    )


__all__ = [
    "ImageFeatures",
    "TextFeatures",
    "device_and_dtype",
    "encode_images",
    "encode_texts",
    "pixel_values_of",
    "progress_bar",
    "retrieval_base",
]
