"""Console scripts `mtgfe-index` (build / update / resume an index of an image folder) and `mtgfe-search`.

    mtgfe-index --model runs/ucm --images /data/archive --output /data/archive.idx
    mtgfe-search --index /data/archive.idx --model runs/ucm "two white planes near the terminal" --html out.html

Both return an exit code from `main(argv)` so tests call them in-process.

Thread waiting: on small CPU boxes torch's OpenMP threads spin after each op and starve the next matmul
(measured: a 5 ms text encode took 272 ms right after an image forward). `OMP_WAIT_POLICY=PASSIVE` fixes
it, but only when set before torch is first imported, and a library must not change its user's process
environment on import. So the entry points set it (unless the user did) as their first act, and this module
imports torch and the index code only inside them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from mtgfe.utils.io import atomic_write_json, read_json

logger = logging.getLogger(__name__)

TOKEN_DTYPES = ("bfloat16", "float16", "float32")


def prefer_passive_omp() -> None:
    """`OMP_WAIT_POLICY=PASSIVE` unless set; effective only when torch is not imported yet (see module docstring)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def load_model_and_processor(model_dir: str, processor_dir: str | None = None):
    """`AutoModel` + `AutoProcessor` from a saved folder (the package registers the MTGFE classes)."""
    from transformers import AutoModel, AutoProcessor

    import modeling_mtgfe  # noqa: F401 - importing the package registers the Auto classes

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"No model at {model_dir!r} (config.json missing).")
    model = AutoModel.from_pretrained(model_dir).eval()
    source = processor_dir or model_dir
    try:
        processor = AutoProcessor.from_pretrained(source)
    except (OSError, ValueError, TypeError) as error:
        raise FileNotFoundError(
            f"Could not load an MTGFE processor from {source!r} ({error}). Save it beside the model "
            "(processor.save_pretrained(model_dir)) or pass --processor DIR."
        ) from error
    return model, processor


def _read_captions(path: str | None) -> dict[str, list[str]]:
    """Ground truth for ✓ marks: JSON `{file: [captions]}` or JSONL rows with `filename` + `captions`/`caption`."""
    if not path:
        return {}
    if path.endswith(".jsonl"):
        table: dict[str, list[str]] = {}
        for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "filename" not in row:
                raise ValueError(f"{path}:{number}: a row needs 'filename' (and 'captions' or 'caption').")
            caps = row.get("captions") or ([row["caption"]] if "caption" in row else [])
            table.setdefault(row["filename"], []).extend(caps)
        return table
    data = read_json(path, what="captions file")  # a broken file is a FileFormatError naming it
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object mapping file names to caption lists.")
    return {k: [v] if isinstance(v, str) else list(v) for k, v in data.items()}


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


# ----------------------------------------------------------------------------------------------- mtgfe-index
def index_main(argv: list[str] | None = None) -> int:
    prefer_passive_omp()
    import torch

    from .gallery_index import BUILD_STATE_NAME, MANIFEST_NAME, GalleryIndex, IndexMismatchError

    parser = argparse.ArgumentParser(prog="mtgfe-index", description="Encode an image folder into a search index.")
    parser.add_argument("--model", required=True, help="saved MTGFE model folder (with processor files)")
    parser.add_argument("--processor", default=None, help="processor folder, if not beside the model")
    source_group = parser.add_mutually_exclusive_group(required=True)
    source_group.add_argument("--images", help="folder of images (searched recursively)")
    source_group.add_argument("--scenes", help="GeoTIFF / COG scene file or folder, indexed as tiles")
    source_group.add_argument("--delete", nargs="+", metavar="ID",
                              help="remove items (id or image path) from the index in --output, without a rebuild")
    parser.add_argument("--output", required=True, help="index folder; an existing index is updated with new files")
    parser.add_argument("--captions", default=None, help="optional JSON/JSONL ground-truth captions (for ✓ marks)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=1024, help="images per shard (the resume granularity)")
    parser.add_argument("--no-tokens", action="store_true",
                        help="store embeddings only (~1 KiB/image instead of ~97 KiB with the small preset); "
                             "re-ranking then needs the original files")
    parser.add_argument("--tokens-dtype", choices=TOKEN_DTYPES, default="float16",
                        help="fusion token storage (default float16: ΔmR 0.0 vs float32 in benchmarks/measure_token_dtype.py)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted build in --output")
    parser.add_argument("--skip-unreadable", action="store_true", help="skip (and list) files that cannot be decoded")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true")
    _add_scene_arguments(parser)
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if args.batch_size < 1 or args.shard_size < 1:
        parser.error("--batch-size and --shard-size must be >= 1")
    if args.scenes:
        return _index_scenes(args)
    if args.delete:
        return _delete_items(args)
    try:
        model, processor = load_model_and_processor(args.model, args.processor)
        captions = _read_captions(args.captions)
        output = Path(args.output)
        if (output / MANIFEST_NAME).is_file():
            index = GalleryIndex.load(output, model=model, processor=processor)
            before = len(index.manifest.get("skipped", []))
            added = index.add(args.images, batch_size=args.batch_size, skip_unreadable=args.skip_unreadable,
                              captions=captions, progress=not args.quiet)
            if added:
                index.save(output, shard_size=args.shard_size)
            print(f"Updated {output}: {added} new image(s), {len(index)} in total.")
            skipped = index.manifest.get("skipped", [])[before:]
        else:
            if (output / BUILD_STATE_NAME).is_file() and not args.resume:
                print(f"error: {output} holds an interrupted build; rerun with --resume to continue it "
                      "(or delete the folder to start over).", file=sys.stderr)
                return 2
            index = GalleryIndex.build(
                model, processor, args.images, output_dir=output, batch_size=args.batch_size,
                keep_tokens=not args.no_tokens, tokens_dtype=getattr(torch, args.tokens_dtype) if not args.no_tokens else None,
                shard_size=args.shard_size, resume=args.resume, skip_unreadable=args.skip_unreadable,
                captions=captions, progress=not args.quiet,
            )
            skipped = index.manifest.get("skipped", [])
            per_image = index.image_embeds.shape[1] * 4
            if index.image_tokens is not None:
                t, h = index.image_tokens.token_shape
                per_image += t * h * index.image_tokens.dtype.itemsize
            print(f"Indexed {len(index)} image(s) into {output} ({per_image / 1024:.1f} KiB per image).")
    except (FileNotFoundError, FileExistsError, ValueError, IndexMismatchError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if skipped:
        print(f"WARNING: {len(skipped)} unreadable file(s) were SKIPPED:", file=sys.stderr)
        for path in skipped:
            print(f"  {path}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------- mtgfe-search
def _table(results: list[dict]) -> str:
    from .report_html import is_match

    lines = []
    for result in results:
        query = result["query"]
        lines.append(f"query: {query}")
        lines.append(f"  {'rank':>4}  {'score':>8}  {'filter':>8}  gt  result")
        for hit in result["hits"]:
            match = is_match(query, hit)
            mark = "✓" if match else "·" if match is False else " "
            target = hit.get("image", hit.get("text"))
            lines.append(f"  {hit['rank']:>4}  {hit['score']:>8.4f}  {hit['filter_score']:>8.4f}  {mark:^2}  {target}")
    return "\n".join(lines)


def search_main(argv: list[str] | None = None) -> int:
    prefer_passive_omp()
    from modeling_mtgfe.configuration_mtgfe import RETRIEVAL_SCORES
    from modeling_mtgfe.pipeline_mtgfe import resolve_search_defaults

    from .gallery_index import GalleryIndex, IndexMismatchError
    from .report_html import write_contact_sheet, write_html

    parser = argparse.ArgumentParser(prog="mtgfe-search", description="Search an index with text (or image) queries.")
    parser.add_argument("--index", required=True, help="index folder written by mtgfe-index")
    parser.add_argument("--model", required=True, help="the model folder that built the index")
    parser.add_argument("--processor", default=None)
    parser.add_argument("queries", nargs="+", help="text queries (image paths for a caption index)")
    parser.add_argument("--k", type=int, default=None,
                        help="filter candidates re-ranked per query (default: the model config's retrieval_k)")
    parser.add_argument("--top-k", type=int, default=5, help="results shown per query")
    parser.add_argument("--score", choices=RETRIEVAL_SCORES, default=None,
                        help="ranking of the shortlist (default: the model config's retrieval_score)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="filter weight in itm+itc (default: the model config's retrieval_alpha, else 1.0)")
    parser.add_argument("--html", default=None, help="write a self-contained HTML page")
    parser.add_argument("--png", default=None, help="write a contact sheet")
    parser.add_argument("--json", default=None, help="write the raw results")
    parser.add_argument("-v", "--verbose", action="store_true")
    _add_place_arguments(parser)
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        model, processor = load_model_and_processor(args.model, args.processor)
        index = GalleryIndex.load(args.index, model=model, processor=processor)
        k, score, alpha = resolve_search_defaults(model, args.k, args.score, args.alpha)
        hits = index.search(list(args.queries), k=k, top_k=args.top_k, score=score, alpha=alpha)
        results: list[dict[str, Any]] = [{"query": q, "hits": h} for q, h in zip(args.queries, hits)]
        results = _apply_nms(results, args)
    except (FileNotFoundError, ValueError, IndexMismatchError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(_table(results))
    meta = {"index": args.index, "model": args.model, "k": k, "score": score, "images": len(index)}
    try:
        loader = _write_place_outputs(results, args)
    except (OSError, ValueError) as error:  # SceneError / SceneReadError name the scene
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.html:
        html_kwargs = {"image_loader": loader} if loader else {}
        write_html(args.html, results, meta=meta, **html_kwargs)
        if loader:
            _append_quicklooks(args.html, results, args.quicklook_dir)
        print(f"wrote {args.html}")
    if args.png:
        write_contact_sheet(args.png, results, **({"image_loader": loader} if loader else {}))
        print(f"wrote {args.png}")
    if args.json:
        atomic_write_json(args.json, results, indent=1)
    return 0


# ----------------------------------------------------------------------------------------------- scenes (issue #13)
# Kept apart from the image-folder code above: scene tiling, GeoJSON, NMS and quicklooks live in
# `scene_index.py` / `scenes.py` / `geo.py`; these functions only wire them to the two commands.
def _add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scene tiling (with --scenes)")
    group.add_argument("--tile-size", type=int, default=256, help="tile width/height in pixels (default 256)")
    group.add_argument("--stride", type=int, default=None, help="step between tiles (default: --tile-size)")
    group.add_argument("--bands", default=None,
                       help="three 1-based band numbers (GDAL convention) for scenes with 2 or >3 bands, e.g. 3,2,1")
    group.add_argument("--nodata-max-fraction", type=float, default=0.5,
                       help="skip tiles with a larger no-data fraction (default 0.5)")
    group.add_argument("--skip-bad-scenes", action="store_true",
                       help="log and skip corrupt / unreadable scenes instead of stopping at the first")
    group.add_argument("--recursive", action="store_true", help="look for scenes in subfolders too")


def _index_scenes(args) -> int:
    """`mtgfe-index --scenes`: tile scenes through `iter_tiles` and index the tiles (resumable like image builds)."""
    import torch

    from .gallery_index import BUILD_STATE_NAME, MANIFEST_NAME, GalleryIndex, IndexMismatchError
    from .scene_index import SceneSource, parse_bands

    output = Path(args.output)
    try:
        if (output / MANIFEST_NAME).is_file():
            raise FileExistsError(f"{output} already holds a finished index; scene indexes are built once "
                                  "(choose an empty --output, or --resume an interrupted build).")
        if (output / BUILD_STATE_NAME).is_file() and not args.resume:
            raise FileExistsError(f"{output} holds an interrupted build; rerun with --resume to continue it "
                                  "(or delete the folder to start over).")
        source = SceneSource(args.scenes, tile_size=args.tile_size, stride=args.stride, bands=parse_bands(args.bands),
                             nodata_max_fraction=args.nodata_max_fraction,
                             on_error="skip" if args.skip_bad_scenes else "raise", recursive=args.recursive)
        model, processor = load_model_and_processor(args.model, args.processor)
        index = GalleryIndex.build(
            model, processor, source, output_dir=output, batch_size=args.batch_size,
            keep_tokens=not args.no_tokens,
            tokens_dtype=getattr(torch, args.tokens_dtype) if not args.no_tokens else None,
            shard_size=args.shard_size, resume=args.resume, progress=not args.quiet,
        )
    except (FileNotFoundError, FileExistsError, ValueError, OSError, IndexMismatchError) as error:
        # SceneError is a ValueError and SceneReadError also an OSError: both name the scene.
        print(f"error: {error}", file=sys.stderr)
        return 2
    atomic_write_json(output / "tiling_report.json", source.report.to_dict(), indent=1)
    scenes = len({item["scene"] for item in index.items})
    print(f"Indexed {len(index)} tile(s) of {scenes} scene(s) into {output} "
          f"({len(source.report.skipped_tiles)} no-data tile(s) skipped).")
    skipped = index.manifest.get("skipped", [])
    if skipped:
        print(f"WARNING: {len(skipped)} bad scene(s) were SKIPPED:", file=sys.stderr)
        for entry in skipped:
            print(f"  {entry}", file=sys.stderr)
    return 0


def _delete_items(args) -> int:
    """`mtgfe-index --delete ID ...`: tombstone items (`GalleryIndex.delete`, persisted atomically)."""
    from .gallery_index import GalleryIndex, IndexMismatchError

    try:
        model, processor = load_model_and_processor(args.model, args.processor)
        index = GalleryIndex.load(args.output, model=model, processor=processor)
        removed = index.delete(args.delete)
    except KeyError as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, IndexMismatchError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Deleted {removed} item(s) from {args.output}: {index.live_count} of {len(index)} remain searchable.")
    return 0


def _add_place_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("places (scene indexes)")
    group.add_argument("--geojson", default=None, help="write hits as a GeoJSON FeatureCollection (RFC 7946)")
    nms = group.add_mutually_exclusive_group()
    nms.add_argument("--nms", type=float, default=None, metavar="IOU",
                     help="drop hits overlapping a better hit of the same scene by more than IOU")
    nms.add_argument("--merge", type=float, default=None, metavar="IOU",
                     help="merge hits overlapping by more than IOU into one union box")
    group.add_argument("--quicklook-dir", default=None,
                       help="where --html leaves the scene quicklook PNGs (default: beside the HTML)")


def _apply_nms(results: list[dict], args) -> list[dict]:
    from .scene_index import is_tile_hit
    from .scenes import suppress_overlapping

    if args.nms is None and args.merge is None:
        return results
    if not any(is_tile_hit(h) for r in results for h in r["hits"]):
        raise ValueError("--nms / --merge need a scene index (built with mtgfe-index --scenes).")
    mode, iou = ("suppress", args.nms) if args.nms is not None else ("merge", args.merge)
    return [{**r, "hits": suppress_overlapping(r["hits"], iou_threshold=iou, mode=mode)} for r in results]


def _write_place_outputs(results: list[dict], args):
    """GeoJSON of tile hits; returns a thumbnail loader for scene hits (None for an image-file index)."""
    from .geo import hits_to_geojson
    from .scene_index import is_tile_hit, tile_image_loader

    tile_hits = [h for r in results for h in r["hits"] if is_tile_hit(h)]
    if args.geojson:
        if not tile_hits:
            raise ValueError("--geojson needs a scene index (built with mtgfe-index --scenes): these hits have no footprint.")
        collections = [hits_to_geojson(r["hits"], query=r["query"]) for r in results]
        merged = collections[0] if len(collections) == 1 else {
            "type": "FeatureCollection", "features": [f for c in collections for f in c["features"]]}
        atomic_write_json(args.geojson, merged, indent=1)
        print(f"wrote {args.geojson}")
    if not tile_hits:
        return None
    return tile_image_loader({h["image"]: h for h in tile_hits})


def _append_quicklooks(html_path: str, results: list[dict], quicklook_dir: str | None = None) -> None:
    """Embed one quicklook per (query, scene) with the hits drawn as ranked boxes, after the thumbnails."""
    from mtgfe.utils.io import atomic_write_text

    from .scene_index import insert_before_body_end, scene_quicklooks_html

    path = Path(html_path)
    folder = Path(quicklook_dir) if quicklook_dir else path.parent / (path.stem + "_quicklooks")
    fragment = scene_quicklooks_html(results, folder)
    atomic_write_text(path, insert_before_body_end(path.read_text(encoding="utf-8"), fragment))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(search_main())
