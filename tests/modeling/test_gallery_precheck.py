"""The pipeline's header pre-check (`check_gallery_files`) refuses PNG text-chunk bombs wherever they sit.

PIL reads text chunks placed before IDAT in `Image.open` (so the header check saw those), but chunks after
IDAT only in `load()`, i.e. later, while encoding, with a raw "Decompressed Data Too Large". The file here
is a valid 8x8 PNG with one compressed iTXt chunk after IDAT that inflates to 2 MiB of zeros (a few KB on
disk), over PIL's 1 MiB `MAX_TEXT_CHUNK`.
"""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from modeling_mtgfe.pipeline_mtgfe import check_gallery_files


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_with_trailing_itxt(path, inflated_bytes: int):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    raw = path.read_bytes()
    iend = raw.rindex(b"IEND") - 4  # the IEND chunk starts at its length field
    text = b"Comment\x00" + b"\x01\x00" + b"\x00" + b"\x00" + zlib.compress(b"\x00" * inflated_bytes, 9)
    path.write_bytes(raw[:iend] + _chunk(b"iTXt", text) + raw[iend:])
    return path


def test_a_post_idat_itxt_bomb_is_refused_by_the_header_check(tmp_path):
    path = _png_with_trailing_itxt(tmp_path / "bomb.png", 2 * PngImagePlugin.MAX_TEXT_CHUNK)
    assert path.stat().st_size < 20_000
    with Image.open(path) as image:  # what the check used to rely on: the header alone looks fine
        assert image.size == (8, 8)
    with pytest.raises(ValueError, match="text chunk") as info:
        check_gallery_files([str(path)])
    message = str(info.value)
    assert "bomb.png" in message and "Nothing was encoded" in message and "\n" not in message


def test_a_small_post_idat_itxt_chunk_is_accepted(tmp_path):
    path = _png_with_trailing_itxt(tmp_path / "fine.png", 1000)
    check_gallery_files([str(path)])
    with Image.open(path) as image:
        image.load()
