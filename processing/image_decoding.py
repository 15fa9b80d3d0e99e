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

Pixel budget (decompression bombs): encoded inputs (paths, bytes) larger than [`MAX_IMAGE_PIXELS`]
(64 Mi = 67,108,864 pixels, e.g. 8192 x 8192) raise [`ImageTooLargeError`] *before* any pixel is
decoded. The size comes from the header (PIL's `Image.open`; `tifffile`'s `series[0].shape`, where every
non-channel axis counts), so the same budget holds whichever decoder runs. Why: a few-hundred-KB deflate
TIFF or PNG can expand to gigabytes (a 20000 x 20000 TIFF of 456 KB took 1.9 GB and 7 s through the
`tifffile` fallback, which PIL's own `Image.MAX_IMAGE_PIXELS` check never covered; a 12000 x 12000 RGB
PNG under PIL's error limit took 1.1 GB). RS chips and benchmark tiles are 224-1024 px and even large
aerial tiles are a few thousand px, so 64 Mi pixels (192 MiB as 8-bit RGB; below PIL's 89.5 M warning and
179 M error limits) refuses only whole scenes, which belong in windowed reading (mtgfe-index's scene mode,
rasterio), not whole-image decoding. Raise it per call (`max_pixels=`), per process with
`MTGFE_MAX_IMAGE_PIXELS`, or by assigning the module constant. In-memory inputs (PIL images, arrays)
are already decoded and are not checked.

Reduced decoding: with `target_size` (the image processor passes its resize `size`), encoded inputs at
least `2 x REDUCING_GAP` times larger than the target are decoded reduced by an integer factor, keeping
at least [`REDUCING_GAP`] (2) x the target: JPEGs through libjpeg's DCT scaling (`Image.draft`, so the
full-resolution array never exists), other formats with `Image.reduce` right after decoding (high
bit-depth data before the float64 percentile stretch). Why: the processor resizes to 256 px anyway,
and a batch of 8 JPEGs of 6000 x 6000 px peaked at 2.5 GB of process memory decoded at full
resolution, 0.4 GB with the target (0.36 GB are the imports); one such JPEG: 277 -> 7 MiB peak. Smaller images are decoded exactly as without a target. The reduced
result differs slightly from full decode + resize (see [`load_image`]).

Errors: a missing path raises [`ImageFileNotFoundError`] (both a `FileNotFoundError` and an
[`ImageDecodeError`]); an input over the pixel budget raises [`ImageTooLargeError`] (an
`ImageDecodeError`); a corrupt, truncated or non-image file, or an unsupported layout, raises
[`ImageDecodeError`] (a `ValueError`). Every message names the offending file. The whole image is
decoded eagerly (`Image.load()`) so a truncated file fails here, not later inside a data loader.
Note: if the global `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` is set to `True`, PIL pads truncated
files with grey instead of failing; this module does not override that global.

This file is shipped as Hub remote code next to `image_processing_mtgfe.py`, so it imports only
third-party packages.
"""

import io
import logging
import math
import os
from collections.abc import Sequence
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # optional, only for TIFFs PIL cannot open (rule 7). In a try block on purpose: transformers' `check_imports`
    import tifffile  # skips those, so remote code fetched by repo id loads where tifffile is not installed
except ImportError:
    tifffile = None


logger = logging.getLogger(__name__)

STRETCH_PERCENTILES = (2.0, 98.0)
"""Lower / upper percentiles of the per-image linear stretch applied to high bit-depth data."""

DEFAULT_BANDS = (0, 1, 2)
"""Bands taken from multi-band (C > 3) inputs when `bands` is not given."""

MAX_IMAGE_PIXELS = 64 * 1024 * 1024
"""Pixel budget (width x height, 67,108,864 = 8192 x 8192) above which encoded inputs are refused.

Checked from the file header before any pixel is decoded, for PIL and for the `tifffile` fallback alike.
Overridable per call (`load_image(..., max_pixels=N)`), per process with the environment variable
[`MAX_IMAGE_PIXELS_ENV`] (`MTGFE_MAX_IMAGE_PIXELS`), or by assigning this module attribute."""

MAX_IMAGE_PIXELS_ENV = "MTGFE_MAX_IMAGE_PIXELS"
"""Environment variable that overrides [`MAX_IMAGE_PIXELS`] (a positive integer) when `max_pixels` is not given."""

REDUCING_GAP = 2.0
"""With `target_size`, decoding reduces an image by an integer factor only while the result stays at least
`REDUCING_GAP` times the target in both dimensions (the same rule as PIL's `Image.thumbnail`)."""

_HIGH_BIT_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_TIFF_SUFFIXES = (".tif", ".tiff")

ImageSource = Union[str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray]


class ImageDecodeError(ValueError):
    """An input could not be decoded into an RGB image; the message names the file (or input)."""


class ImageTooLargeError(ImageDecodeError):
    """An encoded image is over the pixel budget ([`MAX_IMAGE_PIXELS`]); refused before decoding."""


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


def validate_bands(bands, num_bands: int | None, where: str) -> tuple:
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
            band_idx = validate_bands(DEFAULT_BANDS if bands is None else bands, num_bands, where)
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


# ----------------------------------------------------------------------------------------------- pixel budget
_SAMPLE_BYTES = {"I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "I": 4, "F": 4}


def _resolve_max_pixels(max_pixels) -> int:
    """`max_pixels` if given, else $MTGFE_MAX_IMAGE_PIXELS, else [`MAX_IMAGE_PIXELS`]; a positive int."""
    origin = "max_pixels"
    if max_pixels is None:
        env = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
        if env:
            origin = f"${MAX_IMAGE_PIXELS_ENV}"
            try:
                max_pixels = int(env.replace("_", ""))
            except ValueError:
                raise ImageDecodeError(
                    f"{origin} must be a positive integer number of pixels, got {env!r}."
                ) from None
        else:
            origin, max_pixels = "MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise ImageDecodeError(f"{origin} must be a positive integer number of pixels, got {max_pixels!r}.")
    return int(max_pixels)


def _check_budget(width: int, height: int, bands: int, sample_bytes: int, max_pixels: int, where: str) -> None:
    """Raise [`ImageTooLargeError`] when `width * height` exceeds `max_pixels` (header values, nothing decoded)."""
    pixels = int(width) * int(height)
    if pixels <= max_pixels:
        return
    mib = pixels * bands * sample_bytes / 2**20
    raise ImageTooLargeError(
        f"Refusing to decode {where}: it is {width}x{height} pixels ({pixels / 1e6:.1f} M pixels, {bands} band(s), "
        f"about {mib:,.0f} MiB once decoded), over the image decoding budget of {max_pixels:,} pixels "
        f"({max_pixels / 1e6:.1f} M). Large scenes: index them with windowed reading via mtgfe-index's scene "
        "mode (rasterio), not whole-image decoding. Or raise the budget if you have the memory: "
        f"load_image(..., max_pixels=N), the {MAX_IMAGE_PIXELS_ENV} environment variable, or "
        "mtgfe.processing.image_decoding.MAX_IMAGE_PIXELS."
    )


def _check_pil_budget(image: Image.Image, max_pixels: int, where: str) -> None:
    """Budget check on an opened, not yet loaded, PIL image (`Image.open` reads only the header)."""
    width, height = image.size
    _check_budget(width, height, len(image.getbands()), _SAMPLE_BYTES.get(image.mode, 1), max_pixels, where)


# ----------------------------------------------------------------------------------------------- reduction
def _normalize_target_size(target_size, where: str) -> "tuple[int, int] | None":
    """`target_size` (int or `(height, width)`) as `(height, width)`, or None."""
    if target_size is None:
        return None
    if isinstance(target_size, (int, np.integer)) and not isinstance(target_size, bool):
        target_size = (target_size, target_size)
    if (
        isinstance(target_size, (str, bytes))
        or not isinstance(target_size, Sequence)
        or len(target_size) != 2
        or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in target_size)
    ):
        raise ImageDecodeError(
            f"`target_size` must be a positive int or (height, width), got {target_size!r} for {where}."
        )
    return int(target_size[0]), int(target_size[1])


def _needed_size(target_hw: tuple) -> tuple:
    """Smallest `(width, height)` a reduced decode may have: `REDUCING_GAP` times the target."""
    return math.ceil(target_hw[1] * REDUCING_GAP), math.ceil(target_hw[0] * REDUCING_GAP)


def _reduce_factor(size_wh: tuple, target_hw: "tuple | None") -> int:
    """Largest integer factor that keeps `size_wh` at least `REDUCING_GAP` x the target (1: no reduction)."""
    if target_hw is None:
        return 1
    need_w, need_h = _needed_size(target_hw)
    return max(1, min(size_wh[0] // need_w, size_wh[1] // need_h))


def _draft_jpeg(image: Image.Image, target_hw: "tuple | None") -> None:
    """JPEG only: let libjpeg decode at 1/2, 1/4 or 1/8 scale (DCT scaling) before the pixels exist."""
    if target_hw is None or image.format not in ("JPEG", "MPO"):
        return
    need_w, need_h = _needed_size(target_hw)
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is handled (ignored) by exif_transpose later as well
        orientation = 1
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees on display: the stored axes are swapped
        need_w, need_h = need_h, need_w
    if image.size[0] >= 2 * need_w and image.size[1] >= 2 * need_h:
        image.draft(None, (need_w, need_h))


def _decoded_to_rgb(image: "Image.Image | np.ndarray", bands, target_hw, where: str) -> Image.Image:
    """Rules 1-8 for a freshly decoded file or bytes, reducing towards `target_hw` when given."""
    if isinstance(image, np.ndarray):
        rgb = _array_to_rgb(image, bands, where)
    else:
        image = ImageOps.exif_transpose(image)
        factor = _reduce_factor(image.size, target_hw)
        if factor > 1 and image.mode in _HIGH_BIT_DEPTH_MODES:
            # Reduce before the percentile stretch, which works in float64 (8 bytes per sample).
            image = (image if image.mode in ("I", "F") else image.convert("I")).reduce(factor)
        rgb = _pil_to_rgb(image, bands, where)
    factor = _reduce_factor(rgb.size, target_hw)
    return rgb.reduce(factor) if factor > 1 else rgb


# ----------------------------------------------------------------------------------------------- readers
def _read_tiff_with_tifffile(path: str, where: str, max_pixels: int) -> np.ndarray:
    """Rule 7: read a TIFF PIL cannot open with `tifffile`, channels last, after the budget check."""
    if tifffile is None:
        raise ImportError("tifffile is not installed")  # the caller names `pip install tifffile`

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes = str(series.axes)
        shape = tuple(int(n) for n in series.shape)  # from the IFDs: no pixel data is read yet
        channel_axes = [i for i, ax in enumerate(axes) if ax in ("S", "C")]
        bands = shape[channel_axes[0]] if channel_axes else 1
        spatial = [n for i, n in enumerate(shape) if i not in channel_axes[:1]]
        # Every non-channel axis counts (pages / planes too), so a multi-page series cannot slip through.
        height = int(np.prod(spatial[:-1], dtype=np.int64)) if len(spatial) > 1 else 1
        width = spatial[-1] if spatial else 1
        sample_bytes = int(getattr(getattr(series, "dtype", None), "itemsize", 1) or 1)
        _check_budget(width, height, bands, sample_bytes, max_pixels, where)
        array = np.asarray(series.asarray())
    if channel_axes:
        array = np.moveaxis(array, channel_axes[0], -1)
    if array.ndim > 3:
        raise ImageDecodeError(f"Unsupported TIFF layout (axes {axes!r}, shape {array.shape}) in {where}.")
    return array


_PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _pil_bomb_error(err: Exception, where: str, max_pixels: int) -> ImageTooLargeError:
    return ImageTooLargeError(
        f"Refusing to decode {where}: PIL's own decompression-bomb limit rejected it ({err}); the mtgfe "
        f"budget is {max_pixels:,} pixels. Large scenes: index them with windowed reading via mtgfe-index's "
        "scene mode (rasterio), not whole-image decoding; to decode it whole anyway, raise both this budget "
        "and `PIL.Image.MAX_IMAGE_PIXELS`."
    )


def _open_with_pil(stream, where: str, max_pixels: int, target_hw) -> Image.Image:
    """Read the header, check the budget, draft JPEGs towards the target, then decode eagerly."""
    image = Image.open(stream)
    _check_pil_budget(image, max_pixels, where)
    _draft_jpeg(image, target_hw)
    image.load()
    return image


def _open_path(path: str, where: str, max_pixels: int, target_hw=None) -> "Image.Image | np.ndarray":
    """Open and fully decode an image file, turning every failure into an `ImageDecodeError`."""
    if not os.path.exists(path):
        err = ImageFileNotFoundError(f"Image file not found: {where}.")
        err.filename = path
        raise err
    if os.path.isdir(path):
        raise ImageDecodeError(f"Expected an image file but got a directory: {where}.")
    is_tiff = path.lower().endswith(_TIFF_SUFFIXES)
    try:
        # Decode eagerly inside `with` so the file handle is closed (PIL keeps TIFF handles open otherwise).
        with open(path, "rb") as handle:
            return _open_with_pil(handle, where, max_pixels, target_hw)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as err:
        if not is_tiff:  # TIFFs go on to tifffile, which applies the mtgfe budget from its own header read
            raise _pil_bomb_error(err, where, max_pixels) from err
        pil_error = err
    except _PIL_ERRORS as err:
        pil_error = err
    if is_tiff:
        try:
            return _read_tiff_with_tifffile(path, where, max_pixels)
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


def _open_bytes(data: bytes, where: str, max_pixels: int, target_hw=None) -> Image.Image:
    try:
        return _open_with_pil(io.BytesIO(data), where, max_pixels, target_hw)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as err:
        raise _pil_bomb_error(err, where, max_pixels) from err
    except _PIL_ERRORS as err:
        raise ImageDecodeError(f"Cannot decode {where} (corrupt, truncated or not an image): {err}") from err


def load_image(
    source: ImageSource,
    bands: Sequence[int] | None = None,
    *,
    max_pixels: int | None = None,
    target_size: "int | tuple[int, int] | None" = None,
) -> Image.Image:
    """Decode `source` into an 8-bit RGB `PIL.Image.Image` following the module's rules.

    Args:
        source (`str`, `os.PathLike`, `bytes`, `PIL.Image.Image` or `np.ndarray`):
            A file path, encoded image bytes, a PIL image, or a `(H, W)` / `(H, W, C)` array.
        bands (`Sequence[int]`, *optional*):
            Three band indices `(r, g, b)` to take from inputs with 2 or more than 3 bands; ignored for
            1- and 3-band inputs. Defaults to [`DEFAULT_BANDS`] `(0, 1, 2)`.
        max_pixels (`int`, *optional*):
            Pixel budget (width x height) for encoded inputs (paths, bytes), checked from the header before
            decoding. Defaults to `$MTGFE_MAX_IMAGE_PIXELS`, else [`MAX_IMAGE_PIXELS`] (64 Mi pixels).
        target_size (`int` or `(height, width)`, *optional*):
            The size the caller will resize the result to (the image processor passes its `size`). Encoded
            inputs larger than [`REDUCING_GAP`] x 2 times this are decoded reduced by an integer factor
            (JPEG: DCT scaling in libjpeg; other formats: `Image.reduce` box averaging right after decoding),
            keeping at least `REDUCING_GAP` x the target. Smaller inputs and in-memory inputs (PIL images,
            arrays) are returned unchanged. The reduced result then resized differs slightly from full
            decode + resize: UCM-Captions `1.jpg` upscaled to 2048 px (JPEG q95 or PNG) and resized to 256 px
            differs by at most 4 grey levels (mean 0.45) from the full decode resized the same way.

    Returns:
        `PIL.Image.Image` in mode `"RGB"`.

    Raises:
        [`ImageFileNotFoundError`]: the path does not exist (also a `FileNotFoundError`).
        [`ImageTooLargeError`]: an encoded input is over the pixel budget (also an `ImageDecodeError`).
        [`ImageDecodeError`]: the input cannot be decoded, or `bands` is invalid (a `ValueError`).
        `TypeError`: `source` is of an unsupported type.
    """
    where = _describe(source)
    if bands is not None:
        bands = validate_bands(bands, None, where)
    if isinstance(source, (str, os.PathLike, bytes, bytearray)):
        budget = _resolve_max_pixels(max_pixels)
        target_hw = _normalize_target_size(target_size, where)
        if isinstance(source, (bytes, bytearray)):
            image = _open_bytes(bytes(source), where, budget, target_hw)
        else:
            image = _open_path(os.fspath(source), where, budget, target_hw)
        return _decoded_to_rgb(image, bands, target_hw, where)
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
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_PIXELS_ENV",
    "REDUCING_GAP",
    "STRETCH_PERCENTILES",
    "ImageDecodeError",
    "ImageFileNotFoundError",
    "ImageTooLargeError",
    "load_image",
    "percentile_stretch",
]
