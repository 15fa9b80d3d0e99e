"""One pixel budget for every decoder, and reduced decoding towards the resize target.

The decompression-bomb files are real, valid images built cheaply (a few KB on disk, a few MB of RAM to
write): decoding them whole would take hundreds of MB to GBs, so each test asserts the refusal comes from
the header, fast and without a large allocation.
"""

import io
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtgfe.processing import MTGFEImageProcessor, load_image
from mtgfe.processing import image_decoding
from mtgfe.processing.image_decoding import MAX_IMAGE_PIXELS, ImageDecodeError, ImageTooLargeError

pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

BOMB_SIDE = 12000  # 144 M pixels: over the mtgfe budget, under PIL's own error limit (2 x 89.5 M)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_zero_png(path: Path, width: int, height: int, color_type: int = 0) -> Path:
    """A valid all-black 8-bit PNG (gray or RGB), streamed row by row: KBs on disk, one row in RAM."""
    channels = {0: 1, 2: 3}[color_type]
    row = b"\x00" * (1 + width * channels)  # filter byte + samples
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b"")
    )
    return path


def write_zero_tiff(path: Path, shape: tuple, dtype="uint8", tile=(512, 512)) -> Path:
    """A valid tiled deflate TIFF of zeros written tile by tile with tifffile (one tile in RAM)."""
    tifffile = pytest.importorskip("tifffile")
    tiles_y = -(-shape[0] // tile[0])
    tiles_x = -(-shape[1] // tile[1])
    extra = tuple(shape[2:])
    zero_tile = np.zeros(tile + extra, dtype=dtype)
    tifffile.imwrite(
        path,
        (zero_tile for _ in range(tiles_y * tiles_x)),
        shape=shape,
        dtype=dtype,
        tile=tile,
        compression="zlib",
        compressionargs={"level": 1},
        photometric="minisblack" if not extra else ("rgb" if extra == (3,) else "minisblack"),
        planarconfig="contig",
        metadata=None,
    )
    return path


def _assert_refused_fast(source, expected_name: str, **kwargs):
    """The budget error names the file, its size, the budget and the remedy, fast and with little memory."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ImageTooLargeError) as info:
            load_image(source, **kwargs)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert expected_name in message
    assert "budget" in message and "scene mode" in message and "max_pixels" in message
    assert isinstance(info.value, ImageDecodeError) and isinstance(info.value, ValueError)
    # Refused from the header: no pixel buffer (whole decodes here take 0.1-1.6 GB and seconds).
    assert elapsed < 2.0, elapsed
    assert peak < 32 * 2**20, peak
    return message


# ----------------------------------------------------------------------------------------------------
# Defect 1: one pixel budget, checked from the header, for every decoder
# ----------------------------------------------------------------------------------------------------


def test_budget_default_is_well_below_pils_limit():
    assert MAX_IMAGE_PIXELS == 64 * 1024 * 1024
    assert MAX_IMAGE_PIXELS < 89_478_485  # PIL's default warning limit (its error limit is twice that)


def test_png_bomb_is_refused_from_the_header(tmp_path):
    path = write_zero_png(tmp_path / "bomb.png", BOMB_SIDE, BOMB_SIDE)
    assert path.stat().st_size < 1_000_000
    message = _assert_refused_fast(path, str(path))
    assert f"{BOMB_SIDE}x{BOMB_SIDE}" in message and f"{MAX_IMAGE_PIXELS:,}" in message


def test_png_bomb_bytes_are_refused_from_the_header(tmp_path):
    data = write_zero_png(tmp_path / "bomb.png", BOMB_SIDE, BOMB_SIDE).read_bytes()
    _assert_refused_fast(data, f"<{len(data)} bytes of encoded image data>")


def test_tiff_bomb_via_pil_is_refused_from_the_header(tmp_path):
    path = write_zero_tiff(tmp_path / "bomb_pil.tif", (BOMB_SIDE, BOMB_SIDE))
    with Image.open(path) as image:  # PIL itself opens this one (under its own limit)
        assert image.size == (BOMB_SIDE, BOMB_SIDE)
    _assert_refused_fast(path, str(path))


def test_tiff_bomb_via_tifffile_is_refused_from_the_header(tmp_path):
    """The issue's file: 20000x20000 deflate; PIL refuses it at open, the tifffile fallback used to read it."""
    path = write_zero_tiff(tmp_path / "bomb_20000.tif", (20000, 20000))
    assert path.stat().st_size < 2_000_000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    message = _assert_refused_fast(path, str(path))
    assert "20000x20000" in message


def test_multiband_tiff_bomb_via_tifffile_is_refused_from_the_header(tmp_path):
    """A 5-band TIFF PIL cannot open at all goes to tifffile: same budget, bands and bytes reported."""
    path = write_zero_tiff(tmp_path / "five_band.tif", (9000, 8000, 5))
    message = _assert_refused_fast(path, str(path))
    assert "8000x9000" in message and "5 band(s)" in message


def test_budget_overrides_per_call_env_and_module(tmp_path, monkeypatch):
    path = write_zero_png(tmp_path / "small.png", 300, 200)
    assert load_image(path).size == (300, 200)
    with pytest.raises(ImageTooLargeError, match="59,999"):
        load_image(path, max_pixels=59_999)
    assert load_image(path, max_pixels=60_000).size == (300, 200)

    monkeypatch.setenv("MTGFE_MAX_IMAGE_PIXELS", "50000")
    with pytest.raises(ImageTooLargeError, match="50,000"):
        load_image(path)
    with pytest.raises(ImageTooLargeError):
        load_image(path.read_bytes())
    assert load_image(path, max_pixels=60_000).size == (300, 200)  # the argument wins
    monkeypatch.setenv("MTGFE_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ImageDecodeError, match="MTGFE_MAX_IMAGE_PIXELS"):
        load_image(path)
    monkeypatch.delenv("MTGFE_MAX_IMAGE_PIXELS")

    monkeypatch.setattr(image_decoding, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageTooLargeError):
        load_image(path)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ImageDecodeError, match="max_pixels"):
            load_image(path, max_pixels=bad)
    # In-memory inputs are already decoded: the budget is about decoding, so they pass.
    assert load_image(np.zeros((200, 300), np.uint8)).size == (300, 200)


def test_tifffile_path_honours_a_raised_budget(tmp_path):
    """Over PIL's own limit but within a raised mtgfe budget, the tifffile fallback still decodes."""
    pytest.importorskip("tifffile")
    path = write_zero_tiff(tmp_path / "five_band_small.tif", (64, 48, 5), dtype="uint16")
    assert load_image(path).size == (48, 64)
    with pytest.raises(ImageTooLargeError):
        load_image(path, max_pixels=64 * 48 - 1)


def test_image_processor_refuses_bombs_by_name(tmp_path):
    path = write_zero_png(tmp_path / "bomb.png", BOMB_SIDE, BOMB_SIDE)
    with pytest.raises(ImageTooLargeError, match="bomb.png"):
        MTGFEImageProcessor()(images=[str(path)], return_tensors="np")


# ----------------------------------------------------------------------------------------------------
# Defect 2: reduced decoding towards the resize target
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ucm_jpg() -> Path:
    from tests.helpers.paths import shared_data_dir

    path = shared_data_dir() / "ucm_captions" / "images" / "jpeg_q95" / "1.jpg"
    if not path.is_file():
        pytest.skip(f"UCM image not found at {path}")
    return path


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory, ucm_jpg) -> Path:
    """A real UCM image upscaled to 6000x6000, JPEG q95 (about 2-4 MB)."""
    path = tmp_path_factory.mktemp("big") / "ucm1_6000.jpg"
    with Image.open(ucm_jpg) as image:
        image.convert("RGB").resize((6000, 6000), Image.BICUBIC).save(path, quality=95)
    return path


def _peak_rss_of_decode_mib(path: Path, target) -> tuple:
    """Peak RSS growth (VmHWM) of one `load_image` in a fresh process: PIL's pixel buffers are not traced.

    VmHWM, not `ru_maxrss`: on Linux the latter carries the (large, pytest + torch) parent's peak over exec.
    """
    import subprocess
    import sys

    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux /proc for peak-RSS measurement")
    # The module file alone (it imports only numpy / PIL): no transformers import in the child.
    code = (
        "import importlib.util, sys;"
        "hwm = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]);"
        "spec = importlib.util.spec_from_file_location('decoding', sys.argv[2]);"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module);"
        "base = hwm();"
        f"image = module.load_image(sys.argv[1], target_size={target!r});"
        "print(image.size[0], image.size[1], (hwm() - base) / 1024)"
    )
    args = [sys.executable, "-c", code, str(path), image_decoding.__file__]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    width, height, mib = out.stdout.split()
    return int(width), int(height), float(mib)


def test_large_jpeg_decodes_with_draft_and_far_less_memory(big_jpeg):
    full_w, full_h, full_mib = _peak_rss_of_decode_mib(big_jpeg, None)
    small_w, small_h, small_mib = _peak_rss_of_decode_mib(big_jpeg, 256)
    assert (full_w, full_h) == (6000, 6000)
    assert (small_w, small_h) == (750, 750)  # libjpeg DCT scaling 1/8, still >= 2 x 256
    assert full_mib > 90  # 6000*6000*3 bytes = 103 MiB at least
    assert small_mib < full_mib / 5, (small_mib, full_mib)


def test_reduced_decode_matches_full_decode_then_resize(tmp_path, ucm_jpg):
    """UCM 1.jpg upscaled to 2048: reduced decode + resize vs full decode + resize to 256 (documented)."""
    with Image.open(ucm_jpg) as image:
        big = image.convert("RGB").resize((2048, 2048), Image.BICUBIC)
    for name, save_kwargs in (("ucm_2048.jpg", {"quality": 95}), ("ucm_2048.png", {})):
        path = tmp_path / name
        big.save(path, **save_kwargs)
        full = load_image(path)
        reduced = load_image(path, target_size=(256, 256))
        assert full.size == (2048, 2048) and reduced.size == (512, 512)  # JPEG 1/4 draft, PNG reduce(4)
        a = np.asarray(full.resize((256, 256), Image.BICUBIC), dtype=np.int16)
        b = np.asarray(reduced.resize((256, 256), Image.BICUBIC), dtype=np.int16)
        diff = np.abs(a - b)
        # Measured (Pillow 13, UCM 1.jpg): max 4, mean 0.45 grey levels for both the JPEG and the PNG.
        assert diff.mean() < 1.0 and diff.max() <= 8, (name, diff.max(), diff.mean())


def test_target_size_keeps_pixels_at_or_below_twice_the_target(tmp_path, ucm_jpg):
    """Images not at least 2 x REDUCING_GAP x target are decoded exactly as without a target."""
    assert load_image(ucm_jpg, target_size=256).tobytes() == load_image(ucm_jpg).tobytes()
    assert load_image(ucm_jpg, target_size=(64, 64)).size == (128, 128)  # 256 -> 1/2 draft, >= 2 x 64
    with Image.open(ucm_jpg) as image:
        rgb = image.convert("RGB")
    path = tmp_path / "ucm_1000.png"
    rgb.resize((1000, 1000)).save(path)
    assert load_image(path, target_size=256).tobytes() == load_image(path).tobytes()  # 1000 < 1024
    # In-memory inputs are never reduced.
    assert load_image(rgb, target_size=16) is rgb
    with pytest.raises(ImageDecodeError, match="target_size"):
        load_image(path, target_size=(0, 5))


def test_jpeg_draft_respects_exif_rotation():
    """The draft request is made on stored axes: a 90-degree EXIF rotation swaps the target's sides."""
    image = Image.new("RGB", (4000, 1000), (200, 10, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # displayed rotated: 1000 wide, 4000 high
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    data = buffer.getvalue()
    assert load_image(data).size == (1000, 4000)
    assert load_image(data, target_size=(400, 100)).size == (250, 1000)  # >= 2 x (100 wide, 400 high)
    assert load_image(data, target_size=(100, 400)).size == (1000, 4000)  # 1000 < 2 x 2 x 400: untouched


def test_high_bit_depth_is_reduced_before_the_stretch(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 4096, size=(1200, 1100), dtype=np.uint16)
    path = tmp_path / "u16.png"
    Image.fromarray(array).save(path)
    reduced = load_image(path, target_size=100)
    assert reduced.size == (220, 240) and reduced.mode == "RGB"  # 1100/5, 1200/5 (>= 200)
    full = np.asarray(load_image(path).resize(reduced.size, Image.BOX), dtype=np.int16)
    assert np.abs(full.mean() - np.asarray(reduced, dtype=np.int16).mean()) < 64


def test_image_processor_passes_its_target_size(big_jpeg, ucm_jpg, monkeypatch):
    seen = []
    original = image_decoding.load_image

    def spy(source, *args, **kwargs):
        seen.append(kwargs.get("target_size"))
        return original(source, *args, **kwargs)

    import mtgfe.processing.image_processing_mtgfe as module

    monkeypatch.setattr(module, "load_image", spy)
    processor = MTGFEImageProcessor()
    out = processor(images=[str(big_jpeg), str(ucm_jpg)], return_tensors="np")["pixel_values"]
    assert out.shape == (2, 3, 256, 256)
    assert seen[:2] == [(256, 256), (256, 256)]
    assert processor.fetch_images(str(big_jpeg)).size == (750, 750)
    seen.clear()
    processor(images=str(ucm_jpg), size={"height": 64, "width": 32}, return_tensors="np")
    assert seen[0] == (64, 32)  # the per-call size, not the configured one
    seen.clear()
    processor(images=str(ucm_jpg), do_resize=False, return_tensors="np")
    assert seen[0] is None
    # Unchanged pixels for benchmark-size images: same output as decoding without a target.
    expected = processor(images=[original(ucm_jpg)], return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(processor(images=[str(ucm_jpg)], return_tensors="np")["pixel_values"], expected)
