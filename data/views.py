"""Image views for training: the ITM/MLM base view and the MVJRC multi-view pairs (docs/METHOD.md §4).

PIL in, PIL out (the image processor normalises later), with PIL and numpy only, so nothing needs
torchvision. Each view first *samples* its parameters from a `numpy.random.Generator` and then
*applies* them; the two steps are public so tests and debugging can see what a view did.

Randomness: every call takes ``rng`` (a `numpy.random.Generator`, a `random.Random` or an int seed);
without one, the transform uses its own stream, seeded by ``seed`` and split per DataLoader worker
(otherwise forked workers would repeat each other's augmentations). The same seed gives identical
views.

The MVJRC views differ in
* resolution: down-scale by s ~ U(0.5, 1) and back (p=0.8), after a random resized crop (0.6, 1);
* colour: jitter of brightness 0.4, contrast 0.4, saturation 0.3, hue 0.05 in random order (p=0.8),
  grayscale (p=0.1), Gaussian blur with sigma in [0.1, 1.5] (p=0.3);
* angle: rotation by k*90 degrees, horizontal and vertical flips (p=0.5 each), optionally a small
  rotation within +-15 degrees with reflect padding.

Direction words in a caption ("on the left", "north of") are contradicted by rotations and flips;
``skip_geometric_for_direction_words`` leaves the angle ops out for such captions.
"""

from __future__ import annotations

import math
import os
import random
import re
import sys
from dataclasses import asdict, dataclass, fields, replace
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter


RngLike = np.random.Generator | random.Random | int | None

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
}
_DIRECTION_WORDS = re.compile(
    r"\b(?:left|right|top|bottom|upper|lower|(?:north|south)(?:east|west)?|east|west)(?:ern|wards?|most|s)?\b",
    re.IGNORECASE,
)
_ROTATIONS = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}


def has_direction_words(caption: str | None) -> bool:
    """Whether a caption says where things are in the frame (left/right/top/bottom/compass words)."""
    return bool(caption) and _DIRECTION_WORDS.search(caption) is not None


def as_generator(rng: np.random.Generator | random.Random | int) -> np.random.Generator:
    """A numpy Generator from any supported source of randomness (a `random.Random` is advanced)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, random.Random):
        return np.random.default_rng(rng.getrandbits(64))
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy Generator, a random.Random or an int seed, got {type(rng).__name__}")


# ------------------------------------------------------------------------------------------ validation


def _check_probability(owner: str, name: str, value) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{owner}.{name} must be a probability in [0, 1], got {value!r}")


def _check_range(owner: str, name: str, value, low: float, high: float, low_open: bool = True) -> None:
    """``value`` must be a pair (a, b) with low < a <= b <= high (or low <= a when not ``low_open``)."""
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
    if ok:
        a, b = value
        ok = (a > low if low_open else a >= low) and a <= b <= high
    if not ok:
        relation = "<" if low_open else "<="
        raise ValueError(f"{owner}.{name} must be a pair (a, b) with {low} {relation} a <= b <= {high}, got {value!r}")


def _check_number(owner: str, name: str, value, low: float, high: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{owner}.{name} must be a number in [{low}, {high}], got {value!r}")


def _check_size(owner: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 8:
        raise ValueError(f"{owner}.image_size must be an integer >= 8, got {value!r}")


def _check_interpolation(owner: str, value) -> None:
    if value not in INTERPOLATIONS:
        raise ValueError(f"{owner}.interpolation must be one of {list(INTERPOLATIONS)}, got {value!r}")


# ------------------------------------------------------------------------------------------ ops


def _to_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def sample_crop(width: int, height: int, scale, ratio, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Random-resized-crop box ``(left, top, right, bottom)`` as in torchvision (10 tries, then centre)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    aspect = width / height
    w, h = (width, round(width / ratio[0])) if aspect < ratio[0] else (
        (round(height * ratio[1]), height) if aspect > ratio[1] else (width, height))
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def _rotate_reflect(image: Image.Image, degrees: float, resample) -> Image.Image:
    """Rotation by a small angle with reflect padding, so no black corners enter the view."""
    width, height = image.size
    theta = math.radians(abs(degrees))
    pad = int(math.ceil(max(width, height) * (math.sin(theta) + math.cos(theta) - 1) / 2)) + 2
    padded = Image.fromarray(np.pad(np.asarray(image), ((pad, pad), (pad, pad), (0, 0)), mode="reflect"))
    rotated = padded.rotate(degrees, resample=resample)
    return rotated.crop((pad, pad, pad + width, pad + height))


def _adjust_hue(image: Image.Image, shift: float) -> Image.Image:
    hsv = np.array(image.convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(round(shift * 255))) % 256
    return Image.fromarray(hsv, mode="HSV").convert("RGB")


def apply_colour(image: Image.Image, params: dict) -> Image.Image:
    """Colour jitter (in the sampled order), grayscale and blur of a view's parameters."""
    for op in params.get("jitter_order", ()):
        factor = params[op]
        if op == "brightness":
            image = ImageEnhance.Brightness(image).enhance(factor)
        elif op == "contrast":
            image = ImageEnhance.Contrast(image).enhance(factor)
        elif op == "saturation":
            image = ImageEnhance.Color(image).enhance(factor)
        elif factor:
            image = _adjust_hue(image, factor)
    if params.get("grayscale"):
        image = image.convert("L").convert("RGB")
    if params.get("blur_sigma"):
        image = image.filter(ImageFilter.GaussianBlur(params["blur_sigma"]))
    return image


def apply_view(image: Image.Image, params: dict, image_size: int, interpolation: str = "bicubic") -> Image.Image:
    """Applies sampled view parameters: crop+resize, down-up rescale, angle ops, then colour."""
    resample = INTERPOLATIONS[interpolation]
    image = _to_rgb(image).resize((image_size, image_size), resample, box=params["crop"])
    if params.get("rescale"):
        small = max(1, round(params["rescale"] * image_size))
        image = image.resize((small, small), Image.Resampling.BILINEAR).resize((image_size, image_size), resample)
    if params.get("hflip"):
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if params.get("vflip"):
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    if params.get("rot90"):
        image = image.transpose(_ROTATIONS[params["rot90"]])
    if params.get("affine"):
        image = _rotate_reflect(image, params["affine"], resample)
    return apply_colour(image, params)


class _Stream:
    """The transform's own random stream, re-split in each DataLoader worker process."""

    def __init__(self, seed: int | None):
        self.entropy = np.random.SeedSequence(seed).entropy
        self._owner, self._rng = None, None

    def get(self) -> np.random.Generator:
        owner = (os.getpid(), _worker_seed())
        if owner != self._owner:
            key = [] if owner[1] is None else [owner[1]]
            self._rng = np.random.default_rng(np.random.SeedSequence(self.entropy, spawn_key=key))
            self._owner = owner
        return self._rng


def _worker_seed() -> int | None:
    """Seed of the current DataLoader worker, None outside one (torch is not imported for this)."""
    data = sys.modules.get("torch.utils.data")
    info = data.get_worker_info() if data is not None else None
    return None if info is None else int(info.seed % 2**63)


# ------------------------------------------------------------------------------------------ transforms


class BaseTransform:
    """The ITM/MLM view: random resized crop (scale ``scale``) to a square, then a horizontal flip.

    This is ALBEF's fine-tuning view softened for remote sensing (docs/METHOD.md §4); it keeps the
    direction words of captions valid except for left/right, as ALBEF does.
    """

    def __init__(self, image_size: int = 256, scale=(0.5, 1.0), hflip: bool = True, ratio=(3 / 4, 4 / 3),
                 interpolation: str = "bicubic", seed: int | None = None):
        _check_size("BaseTransform", image_size)
        _check_range("BaseTransform", "scale", scale, 0.0, 1.0)
        _check_range("BaseTransform", "ratio", ratio, 0.0, math.inf)
        _check_interpolation("BaseTransform", interpolation)
        self.image_size, self.scale, self.ratio = image_size, tuple(scale), tuple(ratio)
        self.hflip, self.interpolation = bool(hflip), interpolation
        self._stream = _Stream(seed)

    def sample_params(self, width: int, height: int, rng: RngLike = None) -> dict:
        rng = self._stream.get() if rng is None else as_generator(rng)
        crop = sample_crop(width, height, self.scale, self.ratio, rng)
        return {"crop": crop, "hflip": bool(self.hflip and rng.random() < 0.5)}

    def __call__(self, image: Image.Image, rng: RngLike = None) -> Image.Image:
        params = self.sample_params(*image.size, rng=rng)
        return apply_view(image, params, self.image_size, self.interpolation)

    def __repr__(self):
        return (f"BaseTransform(image_size={self.image_size}, scale={self.scale}, hflip={self.hflip}, "
                f"ratio={self.ratio})")


@dataclass(frozen=True)
class ViewConfig:
    """Parameters of the MVJRC views (docs/METHOD.md §4); every field is checked, errors name it."""

    image_size: int = 256
    # resolution
    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rescale_p: float = 0.8
    rescale_range: tuple[float, float] = (0.5, 1.0)
    # colour
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.3
    hue: float = 0.05
    grayscale_p: float = 0.1
    blur_p: float = 0.3
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    # angle
    rot90_p: float = 1.0  # probability of drawing k ~ U{0..3} (k = 0 included) rather than k = 0
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    affine_p: float = 0.0
    affine_degrees: float = 15.0
    skip_geometric_for_direction_words: bool = False
    interpolation: str = "bicubic"

    def __post_init__(self):
        owner = "ViewConfig"
        _check_size(owner, self.image_size)
        _check_range(owner, "crop_scale", self.crop_scale, 0.0, 1.0)
        _check_range(owner, "crop_ratio", self.crop_ratio, 0.0, math.inf)
        _check_range(owner, "rescale_range", self.rescale_range, 0.0, 1.0)
        _check_range(owner, "blur_sigma", self.blur_sigma, 0.0, 100.0)
        for name in ("rescale_p", "jitter_p", "grayscale_p", "blur_p", "rot90_p", "hflip_p", "vflip_p", "affine_p"):
            _check_probability(owner, name, getattr(self, name))
        for name in ("brightness", "contrast", "saturation"):
            _check_number(owner, name, getattr(self, name), 0.0, 1.0)
        _check_number(owner, "hue", self.hue, 0.0, 0.5)
        _check_number(owner, "affine_degrees", self.affine_degrees, 0.0, 180.0)
        if not isinstance(self.skip_geometric_for_direction_words, bool):
            raise ValueError(f"{owner}.skip_geometric_for_direction_words must be a bool, "
                             f"got {self.skip_geometric_for_direction_words!r}")
        _check_interpolation(owner, self.interpolation)

    @classmethod
    def from_dict(cls, values: dict) -> ViewConfig:
        """From a (YAML) mapping; unknown keys raise instead of being ignored."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown ViewConfig field(s) {unknown}; known: {[f.name for f in fields(cls)]}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)


class MultiViewTransform:
    """``num_views`` independent MVJRC views of one image (resolution, colour and angle changes).

    Call it as ``view_1, view_2 = transform(image, caption=None, rng=None)``. With
    ``skip_geometric_for_direction_words`` and a caption like "a plane to the left of a hangar",
    the views keep their orientation (no rotation, flip or affine).
    """

    def __init__(self, image_size: int | None = None, config: ViewConfig | None = None, num_views: int = 2,
                 seed: int | None = None, **overrides):
        config = config or ViewConfig()
        if image_size is not None:
            overrides["image_size"] = image_size
        unknown = sorted(set(overrides) - {f.name for f in fields(ViewConfig)})
        if unknown:
            raise ValueError(f"unknown ViewConfig field(s) {unknown}")
        self.config = replace(config, **overrides) if overrides else config
        if not isinstance(num_views, int) or num_views < 1:
            raise ValueError(f"MultiViewTransform.num_views must be a positive integer, got {num_views!r}")
        self.num_views = num_views
        self._stream = _Stream(seed)

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def sample_params(self, width: int, height: int, rng: RngLike = None, geometric: bool = True) -> dict:
        """Parameters of one view; ``geometric=False`` leaves out rotation, flips and affine."""
        c = self.config
        rng = self._stream.get() if rng is None else as_generator(rng)
        params: dict = {"crop": sample_crop(width, height, c.crop_scale, c.crop_ratio, rng)}
        params["rescale"] = float(rng.uniform(*c.rescale_range)) if rng.random() < c.rescale_p else None
        if geometric:
            params["rot90"] = int(rng.integers(0, 4)) if rng.random() < c.rot90_p else 0
            params["hflip"] = bool(rng.random() < c.hflip_p)
            params["vflip"] = bool(rng.random() < c.vflip_p)
            affine = rng.random() < c.affine_p
            params["affine"] = float(rng.uniform(-c.affine_degrees, c.affine_degrees)) if affine else None
        if rng.random() < c.jitter_p:
            params["jitter_order"] = [("brightness", "contrast", "saturation", "hue")[i] for i in rng.permutation(4)]
            for name in ("brightness", "contrast", "saturation"):
                strength = getattr(c, name)
                params[name] = float(rng.uniform(max(0.0, 1 - strength), 1 + strength))
            params["hue"] = float(rng.uniform(-c.hue, c.hue))
        params["grayscale"] = bool(rng.random() < c.grayscale_p)
        params["blur_sigma"] = float(rng.uniform(*c.blur_sigma)) if rng.random() < c.blur_p else None
        return params

    def view(self, image: Image.Image, caption: str | None = None, rng: RngLike = None) -> Image.Image:
        """One view of ``image``."""
        geometric = not (self.config.skip_geometric_for_direction_words and has_direction_words(caption))
        params = self.sample_params(*image.size, rng=rng, geometric=geometric)
        return apply_view(image, params, self.image_size, self.config.interpolation)

    def __call__(self, image: Image.Image, caption: str | None = None, rng: RngLike = None) -> tuple[Image.Image, ...]:
        rng = self._stream.get() if rng is None else as_generator(rng)
        return tuple(self.view(image, caption, rng) for _ in range(self.num_views))

    def __repr__(self):
        return f"MultiViewTransform(num_views={self.num_views}, config={self.config})"


def eval_transform(image_size: int = 256, interpolation: str = "bicubic") -> Callable[[Image.Image], Image.Image]:
    """The evaluation view: the whole image resized to ``image_size`` square, in RGB."""
    _check_size("eval_transform", image_size)
    _check_interpolation("eval_transform", interpolation)
    resample = INTERPOLATIONS[interpolation]

    def transform(image: Image.Image) -> Image.Image:
        return _to_rgb(image).resize((image_size, image_size), resample)

    return transform
