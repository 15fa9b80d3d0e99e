# Copyright 2025 The MTGFE authors. Licensed under the Apache License, Version 2.0.
"""Robust image decoding for remote-sensing (RS) inputs.

Generic loaders (`PIL.Image.open(...).convert("RGB")`, `transformers.image_utils.load_image`) silently
mangle the files that remote-sensing datasets actually contain: 16-bit sensor counts are clipped to
255 (an all-white image), 4-band RGB+NIR arrays are read as RGBA, palette PNGs lose their
transparency handling, and a truncated download fails later with an error that does not say which
file was bad. [`load_image`] turns every supported input into an 8-bit RGB `PIL.Image.Image` with the
rules below, so the image processor and every loader in mtgfe see the same pixels.

Accepted sources: a path (`str` / `os.PathLike`), raw encoded `bytes`, a `PIL.Image.Image`, or a
`numpy.ndarray` laid out `(H, W)` or `(H, W, C)` (channels last).

Decoding rules:

1. **8-bit RGB** passes through unchanged (a PIL input is returned as is, not copied).
2. **8-bit grayscale** (`L`), **bilevel** (`1`) and boolean arrays are replicated to three channels.
3. **High bit-depth** data — PIL modes `I;16`, `I;16L`, `I;16B`, `I;16N`, `I` (int32), `F` (float32) and
   any non-`uint8` numpy array — gets a per-image linear **percentile stretch**: the 2nd and 98th
   percentiles ([`STRETCH_PERCENTILES`]) of the finite values of the selected bands, computed jointly
   over all bands so the ratios between bands (the colour balance) are kept, map to 0 and 255 and
   values outside are clipped. Why: RS sensors store 10–16 bit counts whose useful range is a small,
   scene-dependent window; a fixed `/256` or min–max scaling leaves most scenes almost black, or lets
   one specular pixel / no-data value set the scale. If the two percentiles coincide (e.g. a mostly
   constant image with a thin line), the stretch falls back to min–max; a constant image becomes
   black. NaN / inf become 0.
4. **Alpha** (`RGBA`, `LA`, `PA`, premultiplied `RGBa` / `La`) is removed by compositing on **black**.
   Why black: in RS products transparent pixels mark no-data (outside the swath, masked clouds,
   tile borders), and no-data is conventionally 0; black also matches the zero padding that
   resizing / rotation produce, so the model sees one consistent "nothing here" value.
5. **Palette** (`P`) images are converted through `RGBA` (honouring a transparency entry), then rule 4.
6. **Multi-band** arrays / TIFFs with `C > 3` bands (e.g. RGB+NIR): bands `(0, 1, 2)` are taken by
   default; pass `bands=(r, g, b)` (e.g. `(3, 2, 1)` for a false-colour NIR composite). An index out
   of range raises [`ImageDecodeError`] naming the file (so does a 2-band array). A numpy array with
   4 channels is treated as 4 bands, not RGBA: pass a `PIL.Image` in mode `RGBA` if the 4th channel
   is alpha. For PIL images `bands` applies to mode `RGBX` (how PIL reads a 4-band TIFF without
   alpha). `bands` is ignored for inputs with 1 or 3 bands, so decoding is idempotent:
   `load_image(load_image(x, bands), bands)` equals `load_image(x, bands)`. Other modes (`CMYK`,
   `YCbCr`, `LAB`, `HSV`) use PIL's own conversion to RGB.
7. TIFFs that PIL cannot open (typically >4 bands or planar 16-bit) are read with the optional
   `tifffile` package when it is installed; its channel / sample axis is moved last.
8. EXIF orientation is applied to files and bytes, as `transformers.image_utils.load_image` does.

Errors: a missing path raises [`ImageFileNotFoundError`] (both a `FileNotFoundError` and an
[`ImageDecodeError`]); a corrupt, truncated or non-image file, or an unsupported layout, raises
[`ImageDecodeError`] (a `ValueError`). Every message names the offending file. The whole image is
decoded eagerly (`Image.load()`) so a truncated file fails here, not later inside a data loader.
Note: if the global `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` is set to `True`, PIL pads truncated
files with grey instead of failing; this module does not override that global.

This file is shipped as Hub remote code next to `image_processing_mtgfe.py`, so it imports only
third-party packages.
"""

import io
import logging
import os
from collections.abc import Sequence
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


logger = logging.getLogger(__name__)

STRETCH_PERCENTILES = (2.0, 98.0)
"""Lower / upper percentiles of the per-image linear stretch applied to high bit-depth data."""

DEFAULT_BANDS = (0, 1, 2)
"""Bands taken from multi-band (C > 3) inputs when `bands` is not given."""

_HIGH_BIT_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_TIFF_SUFFIXES = (".tif", ".tiff")

ImageSource = Union[str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray]


class ImageDecodeError(ValueError):
    """An input could not be decoded into an RGB image; the message names the file (or input)."""


class ImageFileNotFoundError(ImageDecodeError, FileNotFoundError):
    """The image path does not exist. Catchable as `FileNotFoundError` and as `ImageDecodeError`."""

    def __str__(self) -> str:
        # OSError.__str__ would render "[Errno None] None: ..." once `filename` is set.
        return str(self.args[0]) if self.args else ""


def _describe(source) -> str:
    """A short human-readable name of `source` for error messages."""
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes of encoded image data>"
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or "<in-memory PIL image>"
        return f"{name!r} (PIL mode {source.mode!r}, size {source.size})"
    if isinstance(source, np.ndarray):
        return f"<numpy array of shape {source.shape}, dtype {source.dtype}>"
    return f"<{type(source).__name__}>"


def _validate_bands(bands, num_bands: int | None, where: str) -> tuple:
    """Return `bands` as a tuple of three ints, in range for `num_bands` bands when that is given."""
    if isinstance(bands, (str, bytes)) or not isinstance(bands, Sequence) or len(bands) != 3:
        raise ImageDecodeError(f"`bands` must be three band indices (r, g, b), got {bands!r} for {where}.")
    out = []
    for b in bands:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)):
            raise ImageDecodeError(f"`bands` must contain integers, got {bands!r} for {where}.")
        if int(b) < 0 or (num_bands is not None and int(b) >= num_bands):
            if num_bands is None:
                raise ImageDecodeError(f"`bands` must be non-negative indices, got {tuple(bands)!r} for {where}.")
            raise ImageDecodeError(
                f"Band index {int(b)} in bands={tuple(bands)} is out of range for {where}, which has "
                f"{num_bands} band(s) (valid indices 0..{num_bands - 1})."
            )
        out.append(int(b))
    return tuple(out)


def percentile_stretch(array: np.ndarray, percentiles=STRETCH_PERCENTILES) -> np.ndarray:
    """Linearly map the `percentiles` of the finite values of `array` to 0..255 and return `uint8`.

    One stretch is computed over all bands jointly (keeps inter-band ratios). Falls back to min–max
    when the percentiles coincide; a constant (or all non-finite) image maps to 0.
    """
    data = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, dtype=np.uint8)
    values = data[finite]
    low, high = np.percentile(values, percentiles)
    if high <= low:
        low, high = values.min(), values.max()
    if high <= low:
        return np.zeros(data.shape, dtype=np.uint8)
    scaled = (np.where(finite, data, low) - low) / (high - low)
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def _array_to_rgb(array: np.ndarray, bands, where: str) -> Image.Image:
    """Rules 1-3 and 6 for a channels-last array (H, W) or (H, W, C)."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        selected = array
    elif array.ndim == 3:
        num_bands = array.shape[-1]
        if num_bands == 3:
            selected = array
        else:
            if bands is None:
                logger.debug("Using bands %s of %d for %s", DEFAULT_BANDS, num_bands, where)
            band_idx = _validate_bands(DEFAULT_BANDS if bands is None else bands, num_bands, where)
            selected = array[..., list(band_idx)]
    else:
        raise ImageDecodeError(
            f"Expected an image array of shape (H, W) or (H, W, C), got shape {array.shape} for {where}."
        )
    if selected.shape[0] == 0 or selected.shape[1] == 0:
        raise ImageDecodeError(f"Empty image (shape {array.shape}) for {where}.")

    if selected.dtype == np.bool_:
        selected = selected.astype(np.uint8) * 255
    elif selected.dtype != np.uint8:
        if not (np.issubdtype(selected.dtype, np.integer) or np.issubdtype(selected.dtype, np.floating)):
            raise ImageDecodeError(f"Unsupported pixel dtype {selected.dtype} for {where}.")
        selected = percentile_stretch(selected)

    selected = np.ascontiguousarray(selected)
    if selected.ndim == 2:
        return Image.fromarray(selected, mode="L").convert("RGB")
    return Image.fromarray(selected, mode="RGB")


def _pil_to_rgb(image: Image.Image, bands, where: str) -> Image.Image:
    """Rules 1-6 for a decoded PIL image."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("L", "1"):
        return image.convert("L").convert("RGB")
    if mode in _HIGH_BIT_DEPTH_MODES:
        return _array_to_rgb(np.asarray(image), None, where)
    if mode == "RGBX":
        # PIL reads a 4-band TIFF without alpha (e.g. RGB+NIR) as RGBX: select bands, rule 6.
        return _array_to_rgb(np.asarray(image), bands, where)
    if mode == "P":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as err:
        raise ImageDecodeError(f"Cannot convert PIL mode {mode!r} to RGB for {where}: {err}") from err


def _read_tiff_with_tifffile(path: str, where: str) -> np.ndarray:
    """Rule 7: read a TIFF PIL cannot open with `tifffile`, channels last."""
    import tifffile  # optional dependency, only needed for exotic TIFFs

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        array = np.asarray(series.asarray())
        axes = str(series.axes)
    channel_axes = [i for i, ax in enumerate(axes) if ax in ("S", "C")]
    if channel_axes:
        array = np.moveaxis(array, channel_axes[0], -1)
    if array.ndim > 3:
        raise ImageDecodeError(f"Unsupported TIFF layout (axes {axes!r}, shape {array.shape}) in {where}.")
    return array


def _open_path(path: str, where: str) -> "Image.Image | np.ndarray":
    """Open and fully decode an image file, turning every failure into an `ImageDecodeError`."""
    if not os.path.exists(path):
        err = ImageFileNotFoundError(f"Image file not found: {where}.")
        err.filename = path
        raise err
    if os.path.isdir(path):
        raise ImageDecodeError(f"Expected an image file but got a directory: {where}.")
    try:
        # Decode eagerly inside `with` so the file handle is closed (PIL keeps TIFF handles open otherwise).
        with open(path, "rb") as handle:
            image = Image.open(handle)
            image.load()
        return image
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        pil_error = err
    if path.lower().endswith(_TIFF_SUFFIXES):
        try:
            return _read_tiff_with_tifffile(path, where)
        except ImportError:
            raise ImageDecodeError(
                f"Cannot decode TIFF {where} with PIL ({pil_error}); multi-band TIFFs need the optional "
                "`tifffile` package: `pip install tifffile`."
            ) from pil_error
        except ImageDecodeError:
            raise
        except Exception as tiff_error:  # tifffile raises many unrelated types (struct.error, KeyError, ...)
            raise ImageDecodeError(
                f"Cannot decode TIFF {where}: PIL said {pil_error!r}; tifffile said {tiff_error!r}."
            ) from tiff_error
    raise ImageDecodeError(
        f"Cannot decode image file {where} (corrupt, truncated or not an image): {pil_error}"
    ) from pil_error


def _open_bytes(data: bytes, where: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise ImageDecodeError(f"Cannot decode {where} (corrupt, truncated or not an image): {err}") from err


def load_image(source: ImageSource, bands: Sequence[int] | None = None) -> Image.Image:
    """Decode `source` into an 8-bit RGB `PIL.Image.Image` following the module's rules.

    Args:
        source (`str`, `os.PathLike`, `bytes`, `PIL.Image.Image` or `np.ndarray`):
            A file path, encoded image bytes, a PIL image, or a `(H, W)` / `(H, W, C)` array.
        bands (`Sequence[int]`, *optional*):
            Three band indices `(r, g, b)` to take from inputs with 2 or more than 3 bands; ignored for
            1- and 3-band inputs. Defaults to [`DEFAULT_BANDS`] `(0, 1, 2)`.

    Returns:
        `PIL.Image.Image` in mode `"RGB"`.

    Raises:
        [`ImageFileNotFoundError`]: the path does not exist (also a `FileNotFoundError`).
        [`ImageDecodeError`]: the input cannot be decoded, or `bands` is invalid (a `ValueError`).
        `TypeError`: `source` is of an unsupported type.
    """
    where = _describe(source)
    if bands is not None:
        bands = _validate_bands(bands, None, where)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        image = _open_path(path, where)
        if isinstance(image, np.ndarray):
            return _array_to_rgb(image, bands, where)
        return _pil_to_rgb(ImageOps.exif_transpose(image), bands, where)
    if isinstance(source, (bytes, bytearray)):
        image = _open_bytes(bytes(source), where)
        return _pil_to_rgb(ImageOps.exif_transpose(image), bands, where)
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source, bands, where)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, bands, where)
    raise TypeError(
        f"Unsupported image source of type {type(source).__name__}; expected a path, bytes, a PIL image "
        "or a numpy array."
    )


__all__ = [
    "DEFAULT_BANDS",
    "STRETCH_PERCENTILES",
    "ImageDecodeError",
    "ImageFileNotFoundError",
    "load_image",
    "percentile_stretch",
]
