"""AVIF files in a folder are listed exactly when the image decoder can read them.

The folder listing (mtgfe-index, folder galleries, the pipeline) and the decoder share one list,
`IMAGE_EXTENSIONS`; `.avif` is on it when this Pillow build decodes AVIF (bundled in Pillow's wheels
since 11.2), and both sides then agree that an `.avif` in a folder is an image.
"""

import numpy as np
import pytest
from PIL import Image, features

from modeling_mtgfe.pipeline_mtgfe import _list_images
from modeling_mtgfe.retrieval import IMAGE_EXTENSIONS
from mtgfe.processing.image_decoding import load_image
from mtgfe.search.gallery_sources import list_image_files


def test_avif_is_listed_exactly_when_pillow_decodes_it():
    assert (".avif" in IMAGE_EXTENSIONS) == features.check("avif")


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow build cannot decode AVIF")
def test_an_avif_in_a_folder_is_listed_and_decoded(tmp_path):
    pixels = np.full((16, 16, 3), 120, np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(pixels).save(tmp_path / "b.avif")
    assert [p.name for p in list_image_files(tmp_path)] == ["a.png", "b.avif"]
    assert [p.rsplit("/", 1)[-1] for p in _list_images(str(tmp_path))] == ["a.png", "b.avif"]
    decoded = np.asarray(load_image(str(tmp_path / "b.avif")))
    assert decoded.shape == (16, 16, 3) and abs(int(decoded.mean()) - 120) < 8
