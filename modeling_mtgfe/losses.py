"""MTGFE training objectives as plain functions (docs/METHOD.md §3).

Each loss is a readable function of tensors that returns a scalar, so it can be unit-tested and
reused outside the model. Sampling helpers take an optional `torch.Generator` so tests are exact.

This file travels as Hub remote code: only third-party imports.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def positive_mask(image_ids: torch.Tensor, other_ids: torch.Tensor | None = None) -> torch.Tensor:
    """`(B, B)` bool mask, True where row and column items show the same image (ALBEF's `idx` rule)."""
    other_ids = image_ids if other_ids is None else other_ids
    return image_ids.view(-1, 1) == other_ids.view(1, -1)


def itc_loss(sim_i2t: torch.Tensor, pos_mask: torch.Tensor) -> torch.Tensor:
    """Symmetric multi-positive InfoNCE (docs/METHOD.md §3.1).

    Args:
        sim_i2t: `(B_img, B_txt)` similarities already divided by the temperature.
        pos_mask: `(B_img, B_txt)` bool, True for matching pairs (several captions of one image all count).
    """
    targets = pos_mask.float()
    i2t = -(F.log_softmax(sim_i2t, dim=1) * targets / targets.sum(1, keepdim=True)).sum(1).mean()
    t2i_targets = targets.t()
    t2i = -(F.log_softmax(sim_i2t.t(), dim=1) * t2i_targets / t2i_targets.sum(1, keepdim=True)).sum(1).mean()
    return (i2t + t2i) / 2


def itc_loss_with_extra_texts(sim_i2t: torch.Tensor, pos_mask: torch.Tensor, extra_i2t: torch.Tensor) -> torch.Tensor:
    """`itc_loss` with extra negative-only text columns in the image→text direction (NegCLIP).

    Args:
        sim_i2t, pos_mask: as in `itc_loss`.
        extra_i2t: `(B_img, P)` scaled similarities of each image to P extra captions (e.g. edited
            captions); `-inf` where a column must not count for a row. They are never positives, and
            they have no image, so the text→image direction is unchanged. `P = 0` gives `itc_loss` exactly.
    """
    if extra_i2t.shape[1] == 0:
        return itc_loss(sim_i2t, pos_mask)
    targets = pos_mask.float()
    logits = torch.cat([sim_i2t, extra_i2t.to(sim_i2t.dtype)], dim=1)
    log_probs = F.log_softmax(logits.float(), dim=1)[:, : sim_i2t.shape[1]]
    i2t = -(log_probs * targets / targets.sum(1, keepdim=True)).sum(1).mean()
    t2i_targets = targets.t()
    t2i = -(F.log_softmax(sim_i2t.t(), dim=1) * t2i_targets / t2i_targets.sum(1, keepdim=True)).sum(1).mean()
    return (i2t + t2i) / 2


def caption_overlap(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: tuple[int, ...]) -> torch.Tensor:
    """`(B, B)` Jaccard overlap of the captions' token sets (special tokens and padding ignored).

    Remote-sensing captions repeat within a class ("there are many buildings" / "there are many
    buildings and trees"), so a hard negative is often a near-copy of a true caption: training ITM to
    call it a mismatch teaches noise. This cheap, tokenizer-level overlap lets the sampler skip them.
    """
    keep = attention_mask.bool()
    for token_id in special_ids:
        keep &= input_ids != token_id
    vocab = int(input_ids.max()) + 1
    counts = torch.zeros(input_ids.shape[0], vocab, device=input_ids.device)
    counts.scatter_add_(1, input_ids.masked_fill(~keep, 0), keep.float())  # dropped tokens add 0
    bags = (counts > 0).float()
    inter = bags @ bags.t()
    sizes = bags.sum(1)
    union = sizes.view(-1, 1) + sizes.view(1, -1) - inter
    return inter / union.clamp_min(1)


def sample_negatives(
    weights: torch.Tensor,
    forbidden: torch.Tensor,
    random_prob: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one negative column per row, never a forbidden one (docs/METHOD.md §3.2).

    Rows draw in proportion to `weights` (softmaxed ITC similarity: hard negatives) except a
    `random_prob` share that draws uniformly among allowed columns. Forbidden columns (the same image,
    or an identical caption string) get probability 0, so a positive can never be picked.

    Args:
        weights: `(R, C)` non-negative sampling weights.
        forbidden: `(R, C)` bool, True where a column must not be drawn.
    Returns:
        `(R,)` long column indices.
    Raises:
        ValueError: when some row has no allowed column (e.g. every item of the batch shows one image).
    """
    allowed = ~forbidden
    if not bool(allowed.any(1).all()):
        bad = int((~allowed.any(1)).nonzero()[0])
        raise ValueError(
            f"Row {bad} of the batch has no valid ITM negative: every other item shows the same image or an "
            "identical caption. Use a larger batch or a sampler that mixes images."
        )
    hard = (weights.float().clamp_min(0) + 1e-4) * allowed
    if random_prob > 0:
        uniform = allowed.float()
        use_random = torch.rand(weights.shape[0], 1, generator=generator, device=weights.device) < random_prob
        hard = torch.where(use_random, uniform, hard)
    return torch.multinomial(hard, 1, generator=generator).squeeze(1)


def itm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the 2-way ITM head; `labels` are 1 for matched pairs, 0 for negatives."""
    return F.cross_entropy(logits.float(), labels)


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_ids: tuple[int, ...],
    mask_token_id: int,
    vocab_size: int,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT/ALBEF masking (docs/METHOD.md §3.3): 80% [MASK], 10% random token, 10% unchanged.

    Special tokens ([PAD], [CLS], [SEP]) and padding are never masked. At least one token per row is
    masked when the row has any maskable token, so short captions still give an MLM signal.

    Returns:
        `(masked_input_ids, labels)` with labels −100 at unmasked positions.
    """
    maskable = attention_mask.bool()
    for token_id in special_ids:
        maskable &= input_ids != token_id
    probs = torch.full(input_ids.shape, probability, device=input_ids.device)
    masked = (torch.rand(input_ids.shape, generator=generator, device=input_ids.device) < probs) & maskable
    # Guarantee one masked token per row that has a maskable token.
    empty = ~masked.any(1) & maskable.any(1)
    if empty.any():
        scores = torch.rand(input_ids.shape, generator=generator, device=input_ids.device).masked_fill(~maskable, -1)
        forced = F.one_hot(scores.argmax(1), input_ids.shape[1]).bool() & empty.view(-1, 1)
        masked |= forced
    labels = input_ids.masked_fill(~masked, -100)
    draw = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    to_mask = masked & (draw < 0.8)
    to_random = masked & (draw >= 0.8) & (draw < 0.9)
    random_tokens = torch.randint(vocab_size, input_ids.shape, generator=generator, device=input_ids.device)
    out = input_ids.masked_fill(to_mask, mask_token_id)
    out = torch.where(to_random, random_tokens, out)
    return out, labels


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over masked positions only (labels −100 elsewhere)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def simsiam_loss(p1: torch.Tensor, z1: torch.Tensor, p2: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Symmetric negative cosine with stop-gradient on the targets (MVJRC default, docs/METHOD.md §3.4).

    Needs no negatives, so other captions of the same image in the batch cannot act as false negatives.
    Range [-1, 1]; −1 is perfect agreement.
    """

    def d(p, z):
        return -(F.normalize(p.float(), dim=-1) * F.normalize(z.detach().float(), dim=-1)).sum(-1).mean()

    return 0.5 * d(p1, z2) + 0.5 * d(p2, z1)


def multiview_infonce_loss(
    u1: torch.Tensor, u2: torch.Tensor, pos_mask: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """InfoNCE between the two views' joint representations (MVJRC `infonce` variant).

    Positives are the same pair's other view plus, through `pos_mask`, other pairs showing the same image.
    """
    u1 = F.normalize(u1.float(), dim=-1)
    u2 = F.normalize(u2.float(), dim=-1)
    return itc_loss(u1 @ u2.t() / temperature, pos_mask)


__all__ = [
    "itc_loss",
    "itc_loss_with_extra_texts",
    "itm_loss",
    "mask_tokens",
    "mlm_loss",
    "multiview_infonce_loss",
    "positive_mask",
    "sample_negatives",
    "simsiam_loss",
]
