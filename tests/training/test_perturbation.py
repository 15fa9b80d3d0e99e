"""Perturbation negatives: edited *train* captions as extra ITM / ITC negatives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modeling_mtgfe import MTGFEConfig, MTGFEForPreTraining
from modeling_mtgfe.losses import itc_loss, itc_loss_with_extra_texts
from mtgfe.training.config import ConfigError, load_config
from mtgfe.training.perturbation import PARTNER_INDEX_OFFSET, CaptionPerturber, edit_caption
from mtgfe.evaluation.compositional import rules as R
from mtgfe.data.annotations import normalize_caption as normalize

TRAIN = [
    "there are two white planes parked near the terminal",
    "a red car is on the left side of the road",
    "many green trees and a blue pool",
    "a white building with a red roof and a green lawn",
]


def test_edits_change_exactly_one_meaning_of_a_train_caption():
    rng = np.random.default_rng(0)
    assert edit_caption(TRAIN[0], "count", rng) in {
        f"there {v} {n} white plane{'s' if n != 'a' else ''} parked near the terminal"
        for v, n in [("is", "a"), *[("are", w) for w in ("three", "four", "five", "six")]]}
    colour = edit_caption(TRAIN[2], "colour", rng)
    assert colour != TRAIN[2] and len(R.tokenize(colour)) == len(R.tokenize(TRAIN[2]))
    assert edit_caption(TRAIN[1], "spatial", rng) == "a red car is on the right side of the road"
    assert edit_caption(TRAIN[3], "binding", rng) == "a red building with a white roof and a green lawn"
    assert edit_caption("a dense forest", "count", rng) is None


def test_perturber_only_edits_training_captions_and_is_deterministic():
    perturber = CaptionPerturber(TRAIN, rate=2.0, seed=3)
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="not a training caption"):
        perturber.negatives("three white planes parked near the terminal", rng)  # e.g. a test caption
    rows = [{"caption": c, "epoch": 0, "index": i} for i, c in enumerate(TRAIN)]

    class Proc:
        def __call__(self, text, max_length, return_tensors):
            ids = torch.tensor([[101, len(t), 102] + [0] * (max_length - 3) for t in text])
            return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    a, b = (perturber.encode(perturber.expand(rows)[1], Proc(), 8) for _ in range(2))
    assert torch.equal(a["perturbed_input_ids"], b["perturbed_input_ids"])
    assert torch.equal(a["perturbed_rows"], b["perturbed_rows"])
    counts = np.bincount(a["perturbed_rows"].numpy(), minlength=len(TRAIN))
    assert counts.max() <= 2 and counts.sum() >= 4
    train_norm = {c.lower() for c in TRAIN}
    for i, cap in enumerate(TRAIN):  # every negative is an edit of its own row's caption, never a real caption
        for neg in perturber.negatives(cap, np.random.default_rng(i)):
            assert neg.lower() not in train_norm and len(R.tokenize(neg)) >= len(R.tokenize(cap)) - 2


def test_trainer_builds_the_perturber_from_the_train_split_only(data_dir):
    from mtgfe.evaluation.compositional.generation import load_source_captions
    from mtgfe.training.splits import load_config_split
    from mtgfe.training.train import build_perturber

    cfg = load_config("ucm_fusion", [f"data.data_dir={data_dir}", "model.itm_perturbation_negatives=1.0"])
    train_rows = load_config_split(cfg, cfg.data.train_split, "captions")
    perturber = build_perturber(cfg, train_rows)
    from mtgfe.data.annotations import normalize_caption

    assert perturber.train == frozenset(normalize_caption(c) for c in train_rows["caption"])
    test_only = {normalize_caption(c) for _, _, caps in load_source_captions("ucm_test", data_dir, False)
                 for c in caps} - perturber.train
    assert test_only  # UCM test has captions absent from train: those can never be edited
    with pytest.raises(ValueError, match="not a training caption"):
        perturber.negatives(sorted(test_only)[0], np.random.default_rng(0))
    assert build_perturber(load_config("ucm_fusion", [f"data.data_dir={data_dir}"]), train_rows) is None


def _batch(config, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 2000, (n, 8), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    pert = ids[[0, 0, 2]].clone()
    pert[:, 3] = torch.tensor([1500, 1600, 1700])
    return dict(pixel_values=torch.randn(n, 3, 32, 32, generator=g), input_ids=ids,
                attention_mask=torch.ones_like(ids), perturbed_input_ids=pert,
                perturbed_attention_mask=torch.ones_like(pert), perturbed_rows=torch.tensor([0, 0, 2]))


@pytest.mark.parametrize("lever,loss", [("itm_perturbation_negatives", "loss_itm"),
                                        ("itc_perturbation_negatives", "loss_itc")])
def test_extra_negatives_enter_the_loss_and_zero_is_identical(lever, loss):
    base = dict(mlm_weight=0.0, mvjrc_weight=0.0)
    torch.manual_seed(0)
    model = MTGFEForPreTraining(MTGFEConfig.from_preset("tiny", **base)).eval()
    batch = _batch(model.config)
    plain = {k: v for k, v in batch.items() if not k.startswith("perturbed")}
    torch.manual_seed(1)
    ref = model(**plain)
    torch.manual_seed(1)
    off = model(**batch)  # levers at 0: the perturbed inputs are ignored, bit for bit
    assert torch.equal(ref.loss, off.loss)
    setattr(model.config, lever, 1.0)
    torch.manual_seed(1)
    on = model(**batch)
    assert not torch.allclose(getattr(on, loss), getattr(ref, loss))
    if lever.startswith("itm"):
        assert on.itm_logits.shape[0] == ref.itm_logits.shape[0] + 3
    # gradients reach the text tower through the edited captions' own forward pass
    model.zero_grad()
    emb = model.mtgfe.embeddings.word_embeddings.weight
    getattr(on, loss).backward()
    assert emb.grad[1500:1501].abs().sum() > 0 or emb.grad[1700:1701].abs().sum() > 0


def test_itc_extra_columns_are_negatives_only():
    sim = torch.randn(3, 3)
    pos = torch.eye(3, dtype=torch.bool)
    assert torch.equal(itc_loss_with_extra_texts(sim, pos, torch.zeros(3, 0)), itc_loss(sim, pos))
    easy = itc_loss_with_extra_texts(sim, pos, torch.full((3, 2), -1e4))
    hard = itc_loss_with_extra_texts(sim, pos, torch.full((3, 2), 10.0))
    assert torch.allclose(easy, itc_loss(sim, pos), atol=1e-5) and hard > easy


def test_config_validation():
    assert load_config("ucm_fusion", ["model.itm_perturbation_negatives=1"]).model.itm_perturbation_negatives == 1
    with pytest.raises(ConfigError, match="itm_perturbation_negatives"):
        load_config("ucm_fusion", ["model.itm_perturbation_negatives=-1"])
    with pytest.raises(ConfigError, match="needs model.itm_weight"):
        load_config("ucm_dual_finetune", ["model.itm_perturbation_negatives=1"])
    with pytest.raises(ValueError, match="itc_perturbation_negatives"):
        MTGFEConfig.from_preset("tiny", itc_perturbation_negatives=20)


# ---------------------------------------------------------------- swap quads (blind-proof source)
PAIRED = [  # (image id, caption): images 0 and 2 share a caption; 1 differs from it by one count word
    (0, "there are two white planes parked ."),
    (1, "there are four white planes parked ."),
    (2, "there are two white planes parked ."),
    (2, "a white plane near the terminal ."),
    (3, "there are two white planes parked ."),
    (3, "there are four white planes parked ."),  # image 3 owns both: it is in no quad
    (4, "many green trees and a road ."),
]


def _paired_dataset():
    from datasets import Dataset

    ids, caps = zip(*PAIRED)
    return Dataset.from_dict({"image_id": list(ids), "caption": list(caps), "caption_id": list(range(len(caps)))})


class _Proc:
    def __call__(self, text, max_length, return_tensors):
        ids_ = torch.tensor([[101, len(t), 102] + [0] * (max_length - 3) for t in text])
        return {"input_ids": ids_, "attention_mask": (ids_ != 0).long()}


def test_partner_index_keeps_only_surely_false_partners():
    from mtgfe.training.perturbation import PartnerIndex

    ids, caps = zip(*PAIRED)
    index = PartnerIndex(ids, caps)
    assert index.candidates(caps[0], 0) == [1]  # row 1 = (image 1, "four"); image 3 owns "two" too: excluded
    assert index.candidates(caps[1], 1) == [0, 2]  # rows of (0, "two") and (2, "two"); not image 3's
    assert index.candidates(caps[4], 3) == [] and index.candidates(caps[6], 4) == []
    assert index.images_with_partners() == 4  # 0, 1, 2, 3 own a caption with a partner (3 can never use it)
    with pytest.raises(ValueError, match="does not own"):
        index.candidates(caps[1], 0)
    with pytest.raises(ValueError, match="rows"):
        PartnerIndex(ids[:-1], caps)


@pytest.mark.parametrize("source", ["pairs", "pairs+edits"])
def test_swap_quads_balance_every_caption_as_positive_and_negative(source):
    dataset = _paired_dataset()
    perturber = CaptionPerturber(dataset["caption"], rate=1.0, seed=0, source=source, dataset=dataset)
    rows = [{**dataset[i], "epoch": 0, "index": i} for i in (0, 1, 6)]
    out, negatives = perturber.expand(rows)
    assert out[:3] == rows and len(out) == 5  # rows 0 and 1 each bring one partner row
    for owner, text in negatives[:4]:  # quads: the partner's caption for me, mine for the partner
        assert normalize(text) != normalize(out[owner]["caption"])
    quad_negs = [(out[o]["image_id"], normalize(t)) for o, t in negatives[:4]]
    quad_pos = [(r["image_id"], normalize(r["caption"])) for r in out[:2] + out[3:]]
    # text-only balance: within the quads each caption is a positive exactly as often as a negative
    assert sorted(t for _, t in quad_negs) == sorted(t for _, t in quad_pos)
    assert not set(quad_negs) & {(i, normalize(c)) for i, c in PAIRED}  # never a real (image, caption) pair
    assert all(r["index"] >= PARTNER_INDEX_OFFSET for r in out[3:])
    tail = negatives[4:]
    if source == "pairs":
        assert tail == []  # row 2 (image 4) has no partner: no negative (an edit would reopen the shortcut)
    else:
        assert [o for o, _ in tail] == [2] and normalize(tail[0][1]) not in perturber.train
    again = perturber.expand(rows)
    assert again == (out, negatives)  # a pure function of (seed, epoch, index)
    enc = perturber.encode(negatives, _Proc(), 8)
    assert enc["perturbed_rows"].tolist() == [o for o, _ in negatives]


def test_swap_quads_need_the_dataset_and_sources_are_checked():
    dataset = _paired_dataset()
    with pytest.raises(ValueError, match="needs the training dataset"):
        CaptionPerturber(TRAIN, rate=1.0, source="pairs")
    with pytest.raises(ValueError, match="unknown perturbation source"):
        CaptionPerturber(TRAIN, rate=1.0, source="swaps")
    with pytest.raises(ValueError, match="not the training captions"):
        CaptionPerturber(TRAIN, rate=1.0, source="pairs", dataset=dataset)
    assert load_config("ucm_fusion", ["model.perturbation_source=pairs"]).model.perturbation_source == "pairs"
    with pytest.raises(ConfigError, match="perturbation_source"):
        load_config("ucm_fusion", ["model.perturbation_source=swaps"])


def test_trainer_builds_swap_quads_from_the_train_split(data_dir):
    from mtgfe.training.splits import load_config_split
    from mtgfe.training.train import build_perturber

    cfg = load_config("ucm_fusion", [f"data.data_dir={data_dir}", "model.itm_perturbation_negatives=1.0",
                                     "model.perturbation_source=pairs"])
    train_rows = load_config_split(cfg, cfg.data.train_split, "captions")
    perturber = build_perturber(cfg, train_rows)
    assert perturber.partners.images_with_partners() > 300  # UCM train: 361 of 1,680 images
    rows = [{**train_rows[i], "epoch": 0, "index": i} for i in range(0, len(train_rows), 7)][:200]
    out, negatives = perturber.expand(rows)
    assert len(out) > len(rows) and len(negatives) == 2 * (len(out) - len(rows))
    own = {}
    for image, caption in zip(train_rows["image_id"], train_rows["caption"]):
        own.setdefault(image, set()).add(normalize(caption))
    for owner, text in negatives:  # every negative is a real train caption the image does not have
        assert normalize(text) in perturber.train and normalize(text) not in own[out[owner]["image_id"]]


def test_swap_quads_refuse_more_than_one_process(data_dir):
    """Partner rows make batch sizes differ across processes (the ITC gather needs equal shapes): refused
    before any data is prepared, naming the setting."""
    from types import SimpleNamespace

    from mtgfe.training.splits import load_config_split
    from mtgfe.training.train import build_train_loader

    cfg = load_config("ucm_fusion", [f"data.data_dir={data_dir}", "model.itm_perturbation_negatives=1.0",
                                     "model.perturbation_source=pairs"])
    train_rows = load_config_split(cfg, cfg.data.train_split, "captions")
    with pytest.raises(ConfigError, match="perturbation_source=pairs runs on one process only"):
        build_train_loader(cfg, train_rows, None, (None, None), SimpleNamespace(num_processes=2))
