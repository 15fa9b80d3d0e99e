"""MTGFE training objectives as plain functions (docs/METHOD.md §3).

Each loss is a readable function of tensors that returns a scalar, so it can be unit-tested and
reused outside the model. Sampling helpers take an optional `torch.Generator` so tests are exact.

This file travels as Hub remote code: only third-party imports.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def positive_mask(image_ids: torch.Tensor, other_ids: torch.Tensor | None = None) -> torch.Tensor:
    """`(B, B)` bool mask, True where row and column items show the same image (ALBEF's `idx` rule)."""
    other_ids = image_ids if other_ids is None else other_ids
    return image_ids.view(-1, 1) == other_ids.view(1, -1)


def _multi_positive_nce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the cross-entropy against the uniform distribution over each row's positives."""
    return -(F.log_softmax(logits, dim=1) * targets / targets.sum(1, keepdim=True)).sum(1).mean()


def itc_loss(
    sim_i2t: torch.Tensor,
    pos_mask: torch.Tensor,
    sim_t2i: torch.Tensor | None = None,
    pos_mask_t2i: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric multi-positive InfoNCE (docs/METHOD.md §3.1).

    Args:
        sim_i2t: `(B_img, B_txt)` similarities already divided by the temperature.
        pos_mask: `(B_img, B_txt)` bool, True for matching pairs (several captions of one image all count).
        sim_t2i, pos_mask_t2i: the text-to-image rows when they are not `sim_i2t.t()`: the cross-process
            "local loss" (see `gather_for_itc`) passes `(B_local_txt, B_global_img)` local captions against
            every process's images here, and local images against every caption as `sim_i2t`. `None`: the
            square single-batch form, t2i = the transpose.
    """
    if sim_t2i is None:
        targets = pos_mask.float()
        i2t = _multi_positive_nce(sim_i2t, targets)
        t2i = _multi_positive_nce(sim_i2t.t(), targets.t())
        return (i2t + t2i) / 2
    if pos_mask_t2i is None:
        raise ValueError("itc_loss: sim_t2i needs its own pos_mask_t2i.")
    i2t = _multi_positive_nce(sim_i2t, pos_mask.float())
    t2i = _multi_positive_nce(sim_t2i, pos_mask_t2i.float())
    return (i2t + t2i) / 2


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums, over processes, the gradients sent to this chunk.

    The same contract as `torch.distributed.nn.functional.all_gather` (deprecated in recent torch): the
    backward all-reduces the `(W * B, D)` gradient and keeps this process's rows, which works on every
    backend (gloo has no reduce-scatter) and costs nothing next to the encoders for ITC-sized tensors.
    """

    @staticmethod
    def forward(ctx, tensor, group, rank, world):
        ctx.group, ctx.rank, ctx.rows = group, rank, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows], None, None, None


def itc_world_size(group=None) -> int:
    """Processes the ITC negatives are gathered from: 1 unless `torch.distributed` is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def gather_for_itc(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    image_ids: torch.Tensor | None = None,
    group=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Gather the ITC embeddings and image ids of every process (docs/METHOD.md §3.1).

    Returns `(all_image, all_text, all_ids, offset)`: the `(N, D)` embeddings of all processes in rank
    order, their `(N,)` image ids, and where this process's rows start (rows `offset:offset + B_local`
    are this process's own tensors). Without an initialised process group, or with one process, it is
    the identity: `(image_embeds, text_embeds, image_ids, 0)` (`image_ids` None -> `arange(B)`).
    `image_ids` None means "every row its own image": the ids are then global row numbers, so rows of
    different processes never count as positives. Given ids are gathered as they are, so an image seen
    by two processes is a positive across them (the trainer's ids are dataset-wide).

    Design: the loss is computed on the *local rows against the global columns* (open_clip's
    `local_loss=True, gather_with_grad=True`): local images vs all captions and local captions vs all
    images, `(B_local, N)` each, instead of the full `(N, N)` matrix on every process (less memory,
    no duplicated work). The embeddings are gathered with an all-gather
    whose backward *sums* the gradients every process sends to a chunk (`_AllGatherWithGrad`, the contract of
    `torch.distributed.nn.functional.all_gather`). Gradient scale: with the
    global loss L = mean over processes of the local losses L_r (equal batches: exactly the
    single-process loss on the whole global batch), process r's backward gives its local embeddings
    d(sum_r' L_r')/de_r = W * dL/de_r, and DDP's *averaging* of parameter gradients over the W processes
    divides that factor back out: the W-process gradient equals the 1-process gradient of the same
    global batch (tests/modeling/test_itc_gather.py checks it to ~1e-6). Do not rescale the loss by W, and do not
    replace the gather with a no-grad one: gradients from the other processes' rows would be lost.

    Batches of different sizes are padded for the collective and trimmed after (one extra tiny
    all_gather of the sizes); each process's mean then weighs its rows by 1/B_r as DDP does for every loss.
    Every process must call this in the same order (it is a collective), as DDP forward passes do.
    """
    batch = image_embeds.shape[0]
    world = itc_world_size(group)
    if world == 1:
        ids = image_ids if image_ids is not None else torch.arange(batch, device=image_embeds.device)
        return image_embeds, text_embeds, ids, 0
    rank = dist.get_rank(group)
    size = torch.tensor([batch], dtype=torch.long, device=image_embeds.device)
    sizes_list = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes_list, size, group=group)
    sizes = [int(s) for s in sizes_list]
    offset, longest = sum(sizes[:rank]), max(sizes)

    def padded(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.shape[0] == longest:
            return tensor.contiguous()
        pad = [0, 0] * (tensor.dim() - 1) + [0, longest - tensor.shape[0]]
        return F.pad(tensor, pad)

    def trimmed(parts) -> torch.Tensor:
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    all_image = trimmed(_AllGatherWithGrad.apply(padded(image_embeds), group, rank, world).chunk(world))
    all_text = trimmed(_AllGatherWithGrad.apply(padded(text_embeds), group, rank, world).chunk(world))
    if image_ids is None:
        all_ids = torch.arange(sum(sizes), device=image_embeds.device)
    else:
        local_ids = padded(image_ids.to(torch.long))
        parts = [torch.empty_like(local_ids) for _ in range(world)]
        dist.all_gather(parts, local_ids, group=group)
        all_ids = trimmed(parts)
    return all_image, all_text, all_ids, offset


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


def grounding_loss(cross_attention_probs: torch.Tensor, token_cells: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Auxiliary grounding loss: `-log` of the cross-attention mass each named token puts on its object's cells.

    Args:
        cross_attention_probs: `(P, heads, T, N)` attention probabilities of P text rows of T tokens over N
            image tokens (fusion layer 0 in the model); the heads are averaged.
        token_cells: `(P, T, N)` bool, True on the grid cells of the objects that token `t` of row `p` names;
            a token (or a row) with no True cell has no target and does not count.
        eps: added inside the log, so a token whose attention misses every target cell gives a large but
            finite loss.

    Returns:
        The mean over targeted (row, token) of `-log(sum over target cells of the head-averaged probability)`;
        0 (still attached to the graph) when nothing is targeted.

    Why: in the twin-recipe probes ITM learned nothing positional from mirrored twins until the
    cross-attention was told where each named group is; near-uniform attention is a permutation-symmetric
    summary of the grid, which gives a scene and its mirror the same fused state.
    """
    if cross_attention_probs.dim() != 4:
        raise ValueError(f"cross_attention_probs must be (pairs, heads, tokens, cells); got shape "
                         f"{tuple(cross_attention_probs.shape)}")
    probs = cross_attention_probs.float().mean(1)  # (P, T, N)
    if token_cells.shape != probs.shape:
        raise ValueError(f"token_cells has shape {tuple(token_cells.shape)} but the attention gives (pairs, tokens, "
                         f"cells) = {tuple(probs.shape)}")
    cells = token_cells.bool()
    targeted = cells.any(-1)  # (P, T)
    if not targeted.any():
        return probs.sum() * 0.0
    mass = (probs * cells).sum(-1)[targeted]
    return -torch.log(mass + eps).mean()


__all__ = [
    "caption_overlap",
    "grounding_loss",
    "gather_for_itc",
    "itc_loss",
    "itc_world_size",
    "itc_loss_with_extra_texts",
    "itm_loss",
    "mask_tokens",
    "mlm_loss",
    "multiview_infonce_loss",
    "positive_mask",
    "sample_negatives",
    "simsiam_loss",
]
