"""A saved checkpoint loads through `trust_remote_code` in a process where mtgfe cannot be imported."""

from __future__ import annotations

import json

import torch

from modeling_mtgfe import MTGFEConfig, MTGFEForPreTraining
from tests.helpers.isolated import run_isolated


def save_tiny_checkpoint(folder):
    from mtgfe.processing import MTGFEImageProcessor, MTGFEProcessor, build_wordpiece_tokenizer

    torch.manual_seed(0)
    model = MTGFEForPreTraining(MTGFEConfig.from_preset("tiny")).eval()
    model.save_pretrained(folder)
    tokenizer = build_wordpiece_tokenizer(["two white planes near a terminal", "a river with a bridge"] * 5, vocab_size=200)
    MTGFEProcessor(MTGFEImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    g = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, 32, 32, generator=g)
    input_ids = torch.tensor([[101, 2048, 2300, 102, 0], [101, 2500, 102, 0, 0]])
    attention_mask = (input_ids != 0).long()
    with torch.no_grad():
        out = model.mtgfe(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask)
    torch.save({"pixel_values": pixel_values, "input_ids": input_ids}, folder / "inputs.pt")
    return out.itm_logits


def test_checkpoint_loads_with_remote_code_without_the_package(tmp_path):
    folder = tmp_path / "ckpt"
    expected = save_tiny_checkpoint(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_mtgfe.MTGFEModel"
    assert config["auto_map"]["AutoConfig"] == "configuration_mtgfe.MTGFEConfig"

    result = run_isolated(
        f"""
        import torch
        from transformers import AutoConfig, AutoModel, AutoModelForPreTraining
        folder = {str(folder)!r}
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        assert type(config).__module__.startswith("transformers_modules"), type(config).__module__
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        full = AutoModelForPreTraining.from_pretrained(folder, trust_remote_code=True)
        assert type(full).__name__ == "MTGFEForPreTraining"
        inputs = torch.load(folder + "/inputs.pt")
        with torch.no_grad():
            out = model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                        attention_mask=(inputs["input_ids"] != 0).long())
        print("LOGITS", out.itm_logits.flatten().tolist())
        from PIL import Image
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
        batch = processor(images=[Image.new("RGB", (40, 40), (10, 120, 30))], text=["two white planes"])
        assert batch["pixel_values"].shape == (1, 3, 32, 32), batch["pixel_values"].shape
        with torch.no_grad():
            model(**batch)
        print("PROCESSOR OK")
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("LOGITS"))
    logits = torch.tensor(json.loads(line.split(" ", 1)[1]))
    assert "PROCESSOR OK" in result.stdout
    torch.testing.assert_close(logits, expected.flatten(), atol=1e-6, rtol=1e-6)


def test_remote_code_without_trust_is_refused(tmp_path):
    folder = tmp_path / "ckpt"
    save_tiny_checkpoint(folder)
    result = run_isolated(
        f"""
        from transformers import AutoModel
        try:
            AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=False)
        except ValueError as error:
            print("REFUSED", str(error)[:80])
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "REFUSED" in result.stdout


def test_efficientnet_lite_checkpoint_loads_with_remote_code(tmp_path):
    """Regression: under trust_remote_code the config and modeling modules live in different folders, each
    with its own copy of configuration_efficientnet_lite, so an isinstance check sent the EfficientNet-Lite
    vision config to AutoModel ("Unrecognized configuration class")."""
    from modeling_mtgfe import EfficientNetLiteConfig

    vision = EfficientNetLiteConfig(image_size=32, width_coefficient=0.25, depth_coefficient=0.25, hidden_size=64)
    config = MTGFEConfig.from_preset("tiny", vision_config=vision)
    torch.manual_seed(0)
    model = MTGFEForPreTraining(config).eval()
    folder = tmp_path / "effnet"
    model.save_pretrained(folder)
    pixel_values = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.mtgfe.get_image_features(pixel_values)
    torch.save(pixel_values, folder / "pixels.pt")
    result = run_isolated(
        f"""
        import torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model.vision_model).__name__ == "EfficientNetLiteModel", type(model.vision_model)
        with torch.no_grad():
            print("EMBED", model.get_image_features(torch.load({str(folder / "pixels.pt")!r})).flatten().tolist())
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("EMBED"))
    torch.testing.assert_close(torch.tensor(json.loads(line.split(" ", 1)[1])), expected.flatten(), atol=1e-6, rtol=1e-6)
