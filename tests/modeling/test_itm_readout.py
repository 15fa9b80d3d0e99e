"""ITM readout (`MTGFEConfig.itm_readout`): `cls` (ALBEF's linear head on the fused [CLS], the default) or
`cls_mean_mlp` (an MLP on [CLS] and the masked mean of the fused word states), used by every ITM score."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from tests.helpers.isolated import remote_code_itm_logits
from tests.helpers.retrieval import CAPTIONS, random_images, tiny_processor
from transformers import pipeline

from modeling_mtgfe import MTGFEConfig, MTGFEForPreTraining, MTGFEModel
from modeling_mtgfe.configuration_mtgfe import ITM_READOUTS
from modeling_mtgfe.pipeline_mtgfe import register_pipeline
from modeling_mtgfe.retrieval import encode_images, encode_texts, rerank

INPUT_IDS = torch.tensor([[101, 2048, 2300, 1999, 102, 0], [101, 2500, 2187, 102, 0, 0], [101, 3000, 102, 0, 0, 0]])
MASK = (INPUT_IDS != 0).long()


def config(readout: str = "cls_mean_mlp", **overrides) -> MTGFEConfig:
    # initializer_range 0.3: at BERT's 0.02 a random tiny fusion stack barely reads its input, so a wrong
    # pooling could hide under float noise
    return MTGFEConfig.from_preset("tiny", itm_readout=readout, text_config={"initializer_range": 0.3},
                                   mlm_weight=0.0, mvjrc_weight=0.0, **overrides)


def model_of(cfg: MTGFEConfig, cls=MTGFEModel, seed: int = 0):
    torch.manual_seed(seed)
    return cls(cfg).eval()


def reference_logits(model: MTGFEModel, tokens, states, mask) -> torch.Tensor:
    """The readout written out independently: [CLS] beside the mean over real tokens other than [CLS]."""
    joint = model.fuse(states, mask, image_tokens=tokens)
    words = mask.clone().float()
    words[:, 0] = 0
    mean = (joint * words[..., None]).sum(1) / words.sum(1, keepdim=True)
    head = model.itm_head
    hidden = F.gelu(F.linear(torch.cat([joint[:, 0], mean], -1), head.dense.weight, head.dense.bias))
    return F.linear(hidden, head.classifier.weight, head.classifier.bias)


def test_default_is_albefs_linear_head_and_bad_values_name_the_field():
    assert MTGFEConfig().itm_readout == "cls" and ITM_READOUTS == ("cls", "cls_mean_mlp")
    assert type(MTGFEModel(MTGFEConfig.from_preset("tiny")).itm_head) is torch.nn.Linear
    with pytest.raises(ValueError, match=r"itm_readout='mean'; allowed: \('cls', 'cls_mean_mlp'\)"):
        MTGFEConfig.from_preset("tiny", itm_readout="mean")


def test_mlp_readout_reads_cls_and_the_masked_word_mean():
    model = model_of(config())
    hidden = model.config.text_config.hidden_size
    assert model.itm_head.dense.weight.shape == (2 * hidden, 2 * hidden)
    assert model.itm_head.classifier.weight.shape == (2, 2 * hidden)
    # PyTorch's own Linear init (uniform in +-1/sqrt(fan_in): std 1/sqrt(3 fan_in)), not BERT's 0.02 normal
    assert abs(model.itm_head.dense.weight.std().item() - (3 * 2 * hidden) ** -0.5) < 0.01
    with torch.no_grad():
        _, tokens = model.encode_image(torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
        states = model.encode_text(INPUT_IDS, MASK)
        got = model.compute_itm_scores(tokens, states, MASK, return_logits=True)
        expected = reference_logits(model, tokens, states, MASK)
        # more padding changes nothing: the mean is over real tokens only
        padded = torch.cat([INPUT_IDS, torch.zeros(3, 4, dtype=torch.long)], 1)
        padded_mask = (padded != 0).long()
        longer = model.compute_itm_scores(tokens, model.encode_text(padded, padded_mask), padded_mask, return_logits=True)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(longer, got, rtol=1e-5, atol=1e-6)


def test_cached_key_values_and_model_forward_use_the_readout():
    model = model_of(config())
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, tokens = model.encode_image(pixels)
        states = model.encode_text(INPUT_IDS, MASK)
        expected = reference_logits(model, tokens, states, MASK)
        cached = model.compute_itm_scores(None, states, MASK, image_key_values=model.image_key_values(tokens),
                                          return_logits=True)
        out = model(pixel_values=pixels, input_ids=INPUT_IDS, attention_mask=MASK)
    torch.testing.assert_close(cached, expected)
    torch.testing.assert_close(out.itm_logits, expected)


def test_pretraining_losses_use_the_readout_and_train_it():
    """The ITM loss (hard negatives and perturbation negatives) reads the same head: its positives' logits
    equal the retrieval scores, and the MLP gets gradients from both kinds of pair."""
    model = model_of(config(itm_perturbation_negatives=1.0), MTGFEForPreTraining)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    pert = torch.tensor([[101, 2049, 2300, 102]])
    out = model(pixel_values=pixels, input_ids=INPUT_IDS, attention_mask=MASK, perturbed_input_ids=pert,
                perturbed_rows=torch.tensor([0]))
    base = model.mtgfe
    with torch.no_grad():
        _, tokens = base.encode_image(pixels)
        positives = base.compute_itm_scores(tokens, base.encode_text(INPUT_IDS, MASK), MASK, return_logits=True)
        edited = base.compute_itm_scores(tokens[:1], base.encode_text(pert), torch.ones_like(pert), return_logits=True)
    assert out.itm_logits.shape == (3 * 3 + 1, 2)
    torch.testing.assert_close(out.itm_logits[:3], positives)
    torch.testing.assert_close(out.itm_logits[-1:], edited)
    out.loss_itm.backward()
    assert base.itm_head.dense.weight.grad.abs().sum() > 0


def test_rerank_and_pipeline_scores_use_the_readout():
    register_pipeline()
    model, processor = model_of(config()), tiny_processor()
    images = random_images(4, seed=5)
    image_feats = encode_images(model, processor, images, progress=False)
    text_feats = encode_texts(model, processor, CAPTIONS[:2])
    result = rerank(model, image_feats, text_feats, k=4, direction="t2i", score="itm")
    with torch.no_grad():
        reference = torch.stack([
            reference_logits(model, image_feats.tokens, text_feats.states[t].expand(4, -1, -1),
                             text_feats.attention_mask[t].expand(4, -1)).softmax(-1)[:, 1]
            for t in range(2)])  # (texts, images)
    pairs = zip(result.pair_image.tolist(), result.pair_text.tolist(), result.pair_itm.tolist())
    for image, text, score in pairs:
        assert score == pytest.approx(reference[text, image].item(), abs=1e-5)
    hits = pipeline("rs-retrieval", model=model, processor=processor)(CAPTIONS[0], gallery=images, top_k=4, k=4,
                                                                       score="itm")
    assert sorted(h["score"] for h in hits) == pytest.approx(sorted(reference[0].tolist()), abs=1e-5)


def test_a_saved_model_without_the_field_loads_with_bit_identical_scores(tmp_path):
    """A config.json written before `itm_readout` existed loads with the linear [CLS] head and scores exactly."""
    model = model_of(MTGFEConfig.from_preset("tiny", mlm_weight=0.0, mvjrc_weight=0.0))
    model.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    assert saved.pop("itm_readout") == "cls"
    path.write_text(json.dumps(saved))
    reloaded = MTGFEModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.itm_readout == "cls" and type(reloaded.itm_head) is torch.nn.Linear
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        before, after = (m(pixel_values=pixels, input_ids=INPUT_IDS, attention_mask=MASK) for m in (model, reloaded))
    assert torch.equal(before.itm_logits, after.itm_logits)
    assert torch.equal(before.logits_per_image, after.logits_per_image)


def test_mlp_readout_round_trips_through_save_and_remote_code(tmp_path):
    model = model_of(config(), MTGFEForPreTraining)
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    reloaded = MTGFEModel.from_pretrained(folder).eval()  # the retrieval class from a pretraining checkpoint
    assert reloaded.config.itm_readout == "cls_mean_mlp"
    assert torch.equal(reloaded.itm_head.dense.weight, model.mtgfe.itm_head.dense.weight)  # loaded, not re-initialised
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = model.mtgfe(pixel_values=pixels, input_ids=INPUT_IDS, attention_mask=MASK).itm_logits
        assert torch.equal(reloaded(pixel_values=pixels, input_ids=INPUT_IDS, attention_mask=MASK).itm_logits, expected)
    logits = remote_code_itm_logits(folder, pixels, INPUT_IDS, "itm_head", "MTGFEClsMeanITMHead", tmp_path)
    torch.testing.assert_close(torch.tensor(logits), expected.flatten(), atol=1e-5, rtol=1e-5)
