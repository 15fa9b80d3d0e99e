"""MVJRC and base views: determinism, what each op does to the pixels, parameter statistics, config errors."""

import random

import numpy as np
import pytest
from PIL import Image

from mtgfe.data.views import (
    BaseTransform,
    MultiViewTransform,
    ViewConfig,
    apply_view,
    eval_transform,
    has_direction_words,
)


SIZE = 64
OFF = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), rescale_p=0.0, jitter_p=0.0, grayscale_p=0.0,
           blur_p=0.0, rot90_p=0.0, hflip_p=0.0, vflip_p=0.0, affine_p=0.0)


def only(**ops):
    """A transform with every random op off except ``ops``: isolates one factor per test."""
    return MultiViewTransform(config=ViewConfig(image_size=SIZE, **{**OFF, **ops}), seed=0)


def textured(size=SIZE, seed=0, mean=None):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    pixels = np.stack([xx * 255 // size, yy * 255 // size, rng.integers(0, 256, (size, size))], -1)
    if mean is not None:
        pixels = mean + (pixels - pixels.mean()) * 0.2
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def as_array(image):
    return np.asarray(image, dtype=np.float32)


def high_frequency_energy(image):
    gray = as_array(image.convert("L"))
    power = np.abs(np.fft.fftshift(np.fft.fft2(gray - gray.mean()))) ** 2
    fy, fx = np.meshgrid(np.fft.fftshift(np.fft.fftfreq(gray.shape[0])), np.fft.fftshift(np.fft.fftfreq(gray.shape[1])),
                         indexing="ij")
    return power[np.hypot(fx, fy) > 0.25].sum()


# ------------------------------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_views():
    image = textured(96)
    runs = [[np.asarray(v) for _ in range(3) for v in MultiViewTransform(SIZE, seed=5, affine_p=0.5)(image)]
            for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*runs))
    assert not np.array_equal(runs[0][0], runs[0][1])  # the two views of one call differ
    transform = MultiViewTransform(SIZE, seed=99)
    for make in (lambda: 7, lambda: np.random.default_rng(7), lambda: random.Random(7)):
        first, second = transform(image, rng=make()), transform(image, rng=make())
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, second))
    other = MultiViewTransform(SIZE, seed=6)(image)
    assert not np.array_equal(np.asarray(other[0]), runs[0][0])
    base = [np.asarray(BaseTransform(SIZE, seed=1)(image)) for _ in range(2)]
    assert np.array_equal(*base)


@pytest.mark.parametrize("size,mode", [((300, 200), "RGB"), ((50, 40), "L"), ((64, 64), "P"), ((120, 90), "RGBA")])
def test_output_size_and_mode_are_always_right(size, mode):
    image = textured(128).resize(size).convert(mode)
    outputs = [*MultiViewTransform(SIZE, seed=0, affine_p=1.0)(image), BaseTransform(SIZE, seed=0)(image),
               eval_transform(SIZE)(image)]
    assert all(o.size == (SIZE, SIZE) and o.mode == "RGB" for o in outputs)


def test_eval_transform_is_a_plain_resize():
    image = textured(100)
    expected = np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BICUBIC))
    assert np.array_equal(np.asarray(eval_transform(SIZE)(image)), expected)


# ------------------------------------------------------------------------------------------ each factor


def test_rotations_cover_all_quarter_turns():
    image = textured()
    reference = apply_view(image, {"crop": (0, 0, SIZE, SIZE)}, SIZE)
    turns = [as_array(reference.rotate(90 * k)) for k in range(4)]
    transform = only(rot90_p=1.0)
    seen = set()
    for seed in range(40):
        view = as_array(transform.view(image, rng=seed))
        seen.add(int(np.argmin([np.abs(view - t).mean() for t in turns])))
    assert seen == {0, 1, 2, 3}


def test_parameter_statistics_follow_the_config():
    transform = MultiViewTransform(SIZE, seed=0)
    rng = np.random.default_rng(0)
    draws = [transform.sample_params(256, 256, rng=rng) for _ in range(2000)]

    def rate(key):
        return np.mean([bool(d.get(key)) for d in draws])

    assert abs(rate("hflip") - 0.5) < 0.05 and abs(rate("vflip") - 0.5) < 0.05
    assert abs(rate("rescale") - 0.8) < 0.04 and abs(rate("jitter_order") - 0.8) < 0.04
    assert abs(rate("grayscale") - 0.1) < 0.03 and abs(rate("blur_sigma") - 0.3) < 0.04
    assert rate("affine") == 0.0
    assert {d["rot90"] for d in draws} == {0, 1, 2, 3}
    jittered = [d for d in draws if "jitter_order" in d]
    expected = (("brightness", 0.6, 1.4), ("contrast", 0.6, 1.4), ("saturation", 0.7, 1.3), ("hue", -0.05, 0.05))
    for key, low, high in expected:
        values = [d[key] for d in jittered]
        assert low <= min(values) < low + 0.05 and high - 0.05 < max(values) <= high
    scales = [d["rescale"] for d in draws if d["rescale"]]
    sigmas = [d["blur_sigma"] for d in draws if d["blur_sigma"]]
    assert 0.5 <= min(scales) and max(scales) <= 1.0 and 0.1 <= min(sigmas) and max(sigmas) <= 1.5
    areas = [(c[2] - c[0]) * (c[3] - c[1]) / 256**2 for c in (d["crop"] for d in draws)]
    assert 0.58 <= min(areas) < 0.65 and max(areas) <= 1.0


def test_brightness_jitter_moves_the_mean_within_range():
    image = textured(mean=100.0)
    transform = only(jitter_p=1.0, contrast=0.0, saturation=0.0, hue=0.0)
    ratios = [as_array(transform.view(image, rng=s)).mean() / as_array(image).mean() for s in range(60)]
    assert 0.58 <= min(ratios) < 0.75 and 1.25 < max(ratios) <= 1.42


@pytest.mark.parametrize(
    "ops", [dict(rescale_p=1.0, rescale_range=(0.5, 0.5)), dict(blur_p=1.0, blur_sigma=(1.5, 1.5))],
    ids=["down-up rescale", "blur"],
)
def test_resolution_ops_remove_high_frequencies(ops):
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    untouched = only().view(noise, rng=0)
    assert high_frequency_energy(only(**ops).view(noise, rng=0)) < 0.5 * high_frequency_energy(untouched)


def test_grayscale_and_reflect_padded_affine():
    gray = as_array(only(grayscale_p=1.0).view(textured(), rng=0))
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    bright = Image.new("RGB", (SIZE, SIZE), (230, 230, 230))
    rotated = only(affine_p=1.0, affine_degrees=15.0)
    assert all(as_array(rotated.view(bright, rng=s)).min() >= 220 for s in range(5))  # no black corners
    assert not np.array_equal(np.asarray(rotated.view(textured(), rng=0)), np.asarray(only().view(textured(), rng=0)))


def test_geometric_ops_skipped_for_direction_words():
    image = textured()
    flip = MultiViewTransform(config=ViewConfig(image_size=SIZE, **{**OFF, "hflip_p": 1.0},
                                                skip_geometric_for_direction_words=True), seed=0)
    plain = np.asarray(only().view(image, rng=0))
    assert np.array_equal(np.asarray(flip.view(image, "a plane on the left of a hangar", rng=0)), plain)
    assert np.array_equal(np.asarray(flip.view(image, "a plane near a hangar", rng=0)), plain[:, ::-1])
    assert all(has_direction_words(c) for c in ("northwest of the pond", "Upper right corner", "the leftmost car"))
    assert not any(has_direction_words(c) for c in ("bright flowers", "a stopover", None, ""))


# ------------------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "field,value",
    [("jitter_p", 1.5), ("crop_scale", (0.9, 0.5)), ("crop_scale", (0.0, 1.0)), ("rescale_range", (0.5, 1.2)),
     ("hue", 0.7), ("brightness", -0.1), ("blur_sigma", (0.0, 1.0)), ("image_size", 0), ("affine_degrees", 200),
     ("interpolation", "cubic"), ("skip_geometric_for_direction_words", "yes"), ("crop_ratio", "wide")],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"ViewConfig\.{field} must be"):
        ViewConfig(**{field: value})


def test_other_invalid_arguments():
    with pytest.raises(ValueError, match=r"BaseTransform\.scale must be"):
        BaseTransform(scale=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"unknown ViewConfig field\(s\) \['colour'\]"):
        MultiViewTransform(colour=0.3)
    with pytest.raises(ValueError, match=r"unknown ViewConfig field\(s\) \['jiter_p'\]"):
        ViewConfig.from_dict({"jiter_p": 0.5})
    with pytest.raises(ValueError, match="num_views must be a positive integer"):
        MultiViewTransform(num_views=0)
    with pytest.raises(TypeError, match="rng must be"):
        BaseTransform(SIZE)(textured(), rng="seed")
    config = ViewConfig.from_dict({"crop_scale": [0.7, 1.0], "image_size": 32})
    assert config.crop_scale == (0.7, 1.0) and MultiViewTransform(config=config).image_size == 32
    assert MultiViewTransform(48, config=config).config.crop_scale == (0.7, 1.0)


class _Params:
    """A tiny dataset whose items are view parameters drawn from the transform's own stream."""

    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return str(self.transform.sample_params(256, 256)["crop"])


def test_dataloader_workers_draw_different_views():
    torch_data = pytest.importorskip("torch.utils.data")
    loader = torch_data.DataLoader(_Params(MultiViewTransform(SIZE, seed=0)), batch_size=1, num_workers=2,
                                   collate_fn=lambda batch: batch[0])
    crops = list(loader)  # worker 0 serves items 0, 2 and worker 1 items 1, 3
    assert crops[0] != crops[1]
