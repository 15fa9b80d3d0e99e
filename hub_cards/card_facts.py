"""What a model or dataset card says about each RS benchmark: names, imagery, citations, licenses.

Split out of cards.py (card rendering) because these are facts about the data, not rendering; the
benchmark names and aliases themselves come from `mtgfe.data.registry`, the one registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from mtgfe.data.registry import canonical_benchmark

__all__ = ["BENCHMARKS", "BenchmarkInfo", "benchmark_info"]


_QU2016 = """@inproceedings{qu2016deep,
  title     = {Deep Semantic Understanding of High Resolution Remote Sensing Image},
  author    = {Qu, B. and Li, X. and Tao, D. and Lu, X.},
  booktitle = {International Conference on Computer, Information and Telecommunication Systems (CITS)},
  year      = {2016}
}"""


@dataclass(frozen=True)
class BenchmarkInfo:
    """What a card needs to know about a benchmark (facts from shared/data/README.md)."""

    key: str
    pretty_name: str
    slug: str  # model-index dataset type when no Hub dataset id is given
    imagery: str  # domain / source / resolution, for limitations
    citations: tuple[str, ...]
    license_note: str


BENCHMARKS: dict[str, BenchmarkInfo] = {
    "ucm": BenchmarkInfo(
        key="ucm",
        pretty_name="UCM-Captions",
        slug="ucm_captions",
        imagery=(
            "UC Merced Land Use aerial orthoimagery (USGS National Map, US urban areas, about 0.3 m = 1 ft per pixel), "
            "2,100 RGB tiles of about 256x256 px in 21 land-use classes, 5 English captions each"
        ),
        citations=(
            _QU2016,
            """@inproceedings{yang2010bag,
  title     = {Bag-of-Visual-Words and Spatial Extensions for Land-Use Classification},
  author    = {Yang, Y. and Newsam, S.},
  booktitle = {ACM SIGSPATIAL International Conference on Advances in Geographic Information Systems},
  year      = {2010}
}""",
        ),
        license_note="No license ships with the caption release; research use with citation (cite Qu et al. 2016 and Yang & Newsam 2010).",
    ),
    "sydney": BenchmarkInfo(
        key="sydney",
        pretty_name="Sydney-Captions",
        slug="sydney_captions",
        imagery=(
            "Google Earth imagery of Sydney, Australia (0.5 m/pixel), 613 RGB tiles of 500x500 px in 7 classes, "
            "5 English captions each"
        ),
        citations=(
            _QU2016,
            """@article{zhang2015saliency,
  title   = {Saliency-Guided Unsupervised Feature Learning for Scene Classification},
  author  = {Zhang, F. and Du, B. and Zhang, L.},
  journal = {IEEE Transactions on Geoscience and Remote Sensing},
  volume  = {53},
  number  = {4},
  year    = {2015}
}""",
        ),
        license_note="No license stated; research use with citation.",
    ),
    "rsicd": BenchmarkInfo(
        key="rsicd",
        pretty_name="RSICD",
        slug="rsicd",
        imagery=(
            "RSICD: 10,921 RGB images of 224x224 px collected from several online map services "
            "(varying ground resolution), 5 English captions each, many repeated word for word"
        ),
        citations=(
            """@article{lu2018exploring,
  title   = {Exploring Models and Data for Remote Sensing Image Caption Generation},
  author  = {Lu, X. and Wang, B. and Zheng, X. and Li, X.},
  journal = {IEEE Transactions on Geoscience and Remote Sensing},
  volume  = {56},
  number  = {4},
  pages   = {2183--2195},
  year    = {2018}
}""",
        ),
        license_note="No license file in the release; research use with citation.",
    ),
    "rsitmd": BenchmarkInfo(
        key="rsitmd",
        pretty_name="RSITMD",
        slug="rsitmd",
        imagery="RSITMD: 4,743 RGB images of 256x256 px with fine-grained English captions (5 per image)",
        citations=(
            """@article{yuan2022exploring,
  title   = {Exploring a Fine-Grained Multiscale Method for Cross-Modal Remote Sensing Image Retrieval},
  author  = {Yuan, Z. and Zhang, W. and Fu, K. and Li, X. and Deng, C. and Wang, H. and Sun, X.},
  journal = {IEEE Transactions on Geoscience and Remote Sensing},
  volume  = {60},
  year    = {2022},
  doi     = {10.1109/TGRS.2021.3078451}
}""",
        ),
        license_note="No license stated; research use with citation.",
    ),
}


def benchmark_info(name: str) -> BenchmarkInfo | None:
    """Card facts of a benchmark name or alias (case and punctuation ignored), else None.

    Names resolve through `mtgfe.data.registry.canonical_benchmark`, the registry data loading
    uses too, so a name that loads a benchmark also finds its card facts.
    """
    return BENCHMARKS.get(canonical_benchmark(name) or "")
