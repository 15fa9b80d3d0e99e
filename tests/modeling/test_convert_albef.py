"""ALBEF → MTGFE conversion on a scaled-down synthetic ALBEF state dict (ALBEF's key names and layout)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F

from modeling_mtgfe import MTGFEForPreTraining
from modeling_mtgfe.convert_albef_checkpoint import (
    ALBEF_IMAGE_MEAN,
    convert_albef_checkpoint,
    interpolate_pos_embed,
)
from modeling_mtgfe.cli import convert_albef_main as main

WIDTH, BLOCKS, PATCH, IMAGE, MLP = 32, 2, 8, 32, 64
TEXT_LAYERS, FUSION, VOCAB, MAX_POS, EMBED = 4, 2, 100, 64, 16
SPECIALS = dict(pad_token_id=0, cls_token_id=2, sep_token_id=3, mask_token_id=4)


def albef_state_dict(text_prefix: str = "text_encoder.bert.", seed: int = 0) -> dict[str, torch.Tensor]:
    """ALBEF's names (timm ViT + xbert BERT), every tensor random so a wrong mapping cannot pass."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    grid = IMAGE // PATCH
    s = {
        "visual_encoder.cls_token": r(1, 1, WIDTH),
        "visual_encoder.pos_embed": r(1, grid * grid + 1, WIDTH),
        "visual_encoder.patch_embed.proj.weight": r(WIDTH, 3, PATCH, PATCH),
        "visual_encoder.patch_embed.proj.bias": r(WIDTH),
        "visual_encoder.norm.weight": r(WIDTH),
        "visual_encoder.norm.bias": r(WIDTH),
    }
    for i in range(BLOCKS):
        b = f"visual_encoder.blocks.{i}."
        s.update({
            b + "norm1.weight": r(WIDTH), b + "norm1.bias": r(WIDTH),
            b + "attn.qkv.weight": r(3 * WIDTH, WIDTH), b + "attn.qkv.bias": r(3 * WIDTH),
            b + "attn.proj.weight": r(WIDTH, WIDTH), b + "attn.proj.bias": r(WIDTH),
            b + "norm2.weight": r(WIDTH), b + "norm2.bias": r(WIDTH),
            b + "mlp.fc1.weight": r(MLP, WIDTH), b + "mlp.fc1.bias": r(MLP),
            b + "mlp.fc2.weight": r(WIDTH, MLP), b + "mlp.fc2.bias": r(WIDTH),
        })  # fmt: skip
    t = text_prefix
    s.update({
        t + "embeddings.word_embeddings.weight": r(VOCAB, WIDTH),
        t + "embeddings.position_embeddings.weight": r(MAX_POS, WIDTH),
        t + "embeddings.token_type_embeddings.weight": r(2, WIDTH),
        t + "embeddings.LayerNorm.weight": r(WIDTH), t + "embeddings.LayerNorm.bias": r(WIDTH),
        t + "embeddings.position_ids": torch.arange(MAX_POS).unsqueeze(0),
    })  # fmt: skip
    for i in range(TEXT_LAYERS):
        blocks = ["attention"] + (["crossattention"] if i >= FUSION else [])
        for block in blocks:
            p = f"{t}encoder.layer.{i}.{block}."
            for name in ("self.query", "self.key", "self.value", "output.dense"):
                s[p + name + ".weight"], s[p + name + ".bias"] = r(WIDTH, WIDTH), r(WIDTH)
            s[p + "output.LayerNorm.weight"], s[p + "output.LayerNorm.bias"] = r(WIDTH), r(WIDTH)
        p = f"{t}encoder.layer.{i}."
        s[p + "intermediate.dense.weight"], s[p + "intermediate.dense.bias"] = r(MLP, WIDTH), r(MLP)
        s[p + "output.dense.weight"], s[p + "output.dense.bias"] = r(WIDTH, MLP), r(WIDTH)
        s[p + "output.LayerNorm.weight"], s[p + "output.LayerNorm.bias"] = r(WIDTH), r(WIDTH)
    if text_prefix == "text_encoder.bert.":  # pre-training checkpoint: BertForMaskedLM with a tied MLM head
        c = "text_encoder.cls.predictions."
        s.update({
            c + "bias": r(VOCAB),
            c + "transform.dense.weight": r(WIDTH, WIDTH), c + "transform.dense.bias": r(WIDTH),
            c + "transform.LayerNorm.weight": r(WIDTH), c + "transform.LayerNorm.bias": r(WIDTH),
        })  # fmt: skip
        s[c + "decoder.weight"] = s[t + "embeddings.word_embeddings.weight"].clone()
        s[c + "decoder.bias"] = s[c + "bias"].clone()
    else:  # a pooler ALBEF never uses: MTGFE has no place for it and must say so
        s["text_encoder.pooler.dense.weight"] = r(WIDTH, WIDTH)
    s.update({
        "vision_proj.weight": r(EMBED, WIDTH), "vision_proj.bias": r(EMBED),
        "text_proj.weight": r(EMBED, WIDTH), "text_proj.bias": r(EMBED),
        "itm_head.weight": r(2, WIDTH), "itm_head.bias": r(2),
        "temp": torch.tensor(0.05),
    })  # fmt: skip
    # Momentum copies and queues: dropped on purpose.
    for key in list(s):
        for online in ("visual_encoder", "text_encoder", "vision_proj", "text_proj"):
            if key.startswith(online + ".") and not key.startswith("text_encoder.cls"):
                s[key.replace(online + ".", online + "_m.", 1)] = s[key].clone()
    s.update(image_queue=r(EMBED, 8), text_queue=r(EMBED, 8), idx_queue=torch.zeros(1, 8), queue_ptr=torch.zeros(1, dtype=torch.long))
    return s


def expected_pairs(state: dict[str, torch.Tensor], text_prefix: str) -> dict[str, torch.Tensor]:
    """Independent MTGFE key → expected tensor table, written out by hand (not with the converter's rules)."""
    v, t = "mtgfe.vision_model.", text_prefix
    out = {
        v + "embeddings.cls_token": state["visual_encoder.cls_token"],
        v + "embeddings.position_embeddings": state["visual_encoder.pos_embed"],
        v + "embeddings.patch_embeddings.projection.weight": state["visual_encoder.patch_embed.proj.weight"],
        v + "embeddings.patch_embeddings.projection.bias": state["visual_encoder.patch_embed.proj.bias"],
        v + "layernorm.weight": state["visual_encoder.norm.weight"],
        v + "layernorm.bias": state["visual_encoder.norm.bias"],
        "mtgfe.temp": state["temp"],
    }
    for i in range(BLOCKS):
        b = f"visual_encoder.blocks.{i}."
        for kind in ("weight", "bias"):
            q, k, val = state[b + f"attn.qkv.{kind}"].split(WIDTH, dim=0)
            out[v + f"layers.{i}.attention.q_proj.{kind}"] = q
            out[v + f"layers.{i}.attention.k_proj.{kind}"] = k
            out[v + f"layers.{i}.attention.v_proj.{kind}"] = val
            out[v + f"layers.{i}.attention.o_proj.{kind}"] = state[b + f"attn.proj.{kind}"]
            out[v + f"layers.{i}.layernorm_before.{kind}"] = state[b + f"norm1.{kind}"]
            out[v + f"layers.{i}.layernorm_after.{kind}"] = state[b + f"norm2.{kind}"]
            out[v + f"layers.{i}.mlp.fc1.{kind}"] = state[b + f"mlp.fc1.{kind}"]
            out[v + f"layers.{i}.mlp.fc2.{kind}"] = state[b + f"mlp.fc2.{kind}"]
    for key, value in state.items():
        if key.startswith(t + "embeddings.") and "position_ids" not in key:
            out["mtgfe.embeddings." + key[len(t + "embeddings.") :]] = value
        elif key.startswith(t + "encoder.layer."):
            index, rest = key[len(t + "encoder.layer.") :].split(".", 1)
            index = int(index)
            layer = f"text_encoder.{index}" if index < FUSION else f"fusion_encoder.{index - FUSION}"
            out[f"mtgfe.{layer}.{rest}"] = value
        elif key.split(".")[0] in ("vision_proj", "text_proj", "itm_head"):
            out["mtgfe." + key] = value
        elif key.startswith("text_encoder.cls.predictions.") and "decoder" not in key:
            out["mlm_head." + key[len("text_encoder.cls.predictions.") :]] = value
    return out


def convert(tmp_path, text_prefix="text_encoder.bert.", **kwargs):
    state = albef_state_dict(text_prefix)
    path = tmp_path / "albef.pth"
    torch.save({"model": state, "epoch": 3, "config": {"temp": 0.07, "queue_size": 8}}, path)
    kwargs.setdefault("vision_num_heads", 2)
    kwargs.setdefault("text_num_heads", 2)
    kwargs.setdefault("special_token_ids", SPECIALS)
    model, report = convert_albef_checkpoint(path, tmp_path / "out", **kwargs)
    return state, model, report


@pytest.mark.parametrize("text_prefix", ["text_encoder.bert.", "text_encoder."])
def test_every_tensor_is_placed_and_reloads(tmp_path, text_prefix):
    state, model, report = convert(tmp_path, text_prefix)
    config = model.config
    assert config.fusion_layer == FUSION and config.text_config.num_hidden_layers == TEXT_LAYERS
    assert config.text_config.vocab_size == VOCAB and config.embed_dim == EMBED
    assert config.vision_config.patch_size == PATCH and config.image_size == IMAGE
    assert config.vision_config.layer_norm_eps == 1e-6  # timm's eps, not ViTConfig's 1e-12

    expected = expected_pairs(state, text_prefix)
    reloaded = MTGFEForPreTraining.from_pretrained(tmp_path / "out").state_dict()
    for converted in (model.state_dict(), reloaded):
        for key, value in expected.items():
            assert torch.equal(converted[key], value.reshape(converted[key].shape)), key
    assert set(report.loaded) == set(expected)
    # The MLM decoder stays tied to the word embeddings.
    assert torch.equal(reloaded["mlm_head.decoder.weight"], state[text_prefix + "embeddings.word_embeddings.weight"])

    momentum = {k for k in state if k.split(".")[0].endswith("_m")}
    queues = {"image_queue", "text_queue", "idx_queue", "queue_ptr"}
    assert momentum and momentum | queues | {text_prefix + "embeddings.position_ids"} <= set(report.dropped)
    # The report names the checkpoint's own keys, not the normalised ones.
    assert report.loaded["mtgfe.embeddings.word_embeddings.weight"] == text_prefix + "embeddings.word_embeddings.weight"
    assert set(report.unplaced) == ({"text_encoder.pooler.dense.weight"} if text_prefix == "text_encoder." else set())
    fresh_heads = ("mvjrc_head.",) if text_prefix == "text_encoder.bert." else ("mvjrc_head.", "mlm_head.")
    assert report.uninitialized and all(k.startswith(fresh_heads) for k in report.uninitialized)
    assert (tmp_path / "out" / "model.safetensors").is_file()


def _timm_vit(state, pixel_values, heads=2):
    """Reference forward of ALBEF's timm ViT, straight from the fused-qkv tensors."""
    x = F.conv2d(pixel_values, state["visual_encoder.patch_embed.proj.weight"], state["visual_encoder.patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([state["visual_encoder.cls_token"].expand(x.shape[0], -1, -1), x], 1) + state["visual_encoder.pos_embed"]
    for i in range(BLOCKS):
        p = lambda n: state[f"visual_encoder.blocks.{i}.{n}"]  # noqa: E731
        h = F.layer_norm(x, (WIDTH,), p("norm1.weight"), p("norm1.bias"), eps=1e-6)
        qkv = F.linear(h, p("attn.qkv.weight"), p("attn.qkv.bias")).reshape(x.shape[0], x.shape[1], 3, heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(-1)
        x = x + F.linear((attn @ v).transpose(1, 2).reshape(x.shape), p("attn.proj.weight"), p("attn.proj.bias"))
        h = F.layer_norm(x, (WIDTH,), p("norm2.weight"), p("norm2.bias"), eps=1e-6)
        x = x + F.linear(F.gelu(F.linear(h, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"), p("mlp.fc2.bias"))
    return F.layer_norm(x, (WIDTH,), state["visual_encoder.norm.weight"], state["visual_encoder.norm.bias"], eps=1e-6)


def test_converted_vit_matches_timm_forward(tmp_path):
    state, model, _ = convert(tmp_path)
    pixel_values = torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.mtgfe.vision_model(pixel_values=pixel_values).last_hidden_state
    torch.testing.assert_close(ours, _timm_vit(state, pixel_values), atol=1e-5, rtol=1e-5)


def test_position_embeddings_are_interpolated(tmp_path):
    pos = torch.randn(1, 1 + 16, WIDTH)
    resized = interpolate_pos_embed(pos, 6)
    assert resized.shape == (1, 1 + 36, WIDTH)
    assert torch.equal(resized[:, :1], pos[:, :1])  # the [CLS] position is kept as is
    assert interpolate_pos_embed(pos, 4) is pos

    _, model, report = convert(tmp_path, vision_image_size=48)
    assert model.config.image_size == 48 and report.pos_embed_grid == (4, 6)
    assert model.mtgfe.vision_model.embeddings.position_embeddings.shape == (1, 37, WIDTH)
    with torch.no_grad():
        assert model.get_image_features(torch.zeros(1, 3, 48, 48)).shape == (1, EMBED)


def test_non_albef_checkpoint_is_refused(tmp_path):
    bert_only = {k: v for k, v in albef_state_dict().items() if not k.startswith("visual_encoder")}
    path = tmp_path / "bert.pth"
    torch.save(bert_only, path)
    with pytest.raises(ValueError, match=r"bert\.pth is not an ALBEF checkpoint.*visual_encoder"):
        convert_albef_checkpoint(path, special_token_ids=SPECIALS)


def test_pickle_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "albef_with_args.pth"
    torch.save({"model": {"temp": torch.tensor(0.07)}, "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ValueError, match=r"Refusing to load .*albef_with_args\.pth.*weights_only"):
        convert_albef_checkpoint(path)


def test_shape_mismatch_names_the_key(tmp_path):
    state = albef_state_dict("text_encoder.")
    state["itm_head.weight"] = torch.randn(3, WIDTH)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"'itm_head\.weight' has shape \(3, 32\)"):
        convert_albef_checkpoint(path, vision_num_heads=2, text_num_heads=2, special_token_ids=SPECIALS)


def test_cli_with_text_config_and_tokenizer(tmp_path, capsys):
    from mtgfe.processing import build_wordpiece_tokenizer

    torch.save({"model": albef_state_dict()}, tmp_path / "albef.pth")
    tokenizer = build_wordpiece_tokenizer(["a plane on a runway", "green trees beside a river"] * 4, vocab_size=VOCAB)
    tokenizer.save_pretrained(tmp_path / "tok")
    # ALBEF's config_bert.json carries fusion_layer / encoder_width besides the BERT fields.
    bert = dict(hidden_size=WIDTH, num_attention_heads=2, num_hidden_layers=TEXT_LAYERS, fusion_layer=FUSION, encoder_width=WIDTH)
    (tmp_path / "config_bert.json").write_text(json.dumps(bert))
    argv = ["--checkpoint", str(tmp_path / "albef.pth"), "--output", str(tmp_path / "out"), "--vision-num-heads", "2",
            "--text-config", str(tmp_path / "config_bert.json"), "--tokenizer", str(tmp_path / "tok")]  # fmt: skip
    assert main(argv) == 0
    assert "loaded target tensors" in capsys.readouterr().out
    processor_config = json.loads((tmp_path / "out" / "processor_config.json").read_text())
    assert processor_config["image_processor"]["image_mean"] == pytest.approx(ALBEF_IMAGE_MEAN)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["cls_token_id"] == tokenizer.cls_token_id and config["mask_token_id"] == tokenizer.mask_token_id

    bert["fusion_layer"] = 3  # disagrees with the tensors
    (tmp_path / "config_bert.json").write_text(json.dumps(bert))
    assert main(argv[:-2]) == 1
    assert "fusion_layer=3" in capsys.readouterr().err
