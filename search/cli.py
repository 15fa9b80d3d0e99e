"""Console scripts `mtgfe-index` (build / update / resume an index of an image folder) and `mtgfe-search`.

    mtgfe-index --model runs/ucm --images /data/archive --output /data/archive.idx
    mtgfe-search --index /data/archive.idx --model runs/ucm "two white planes near the terminal" --html out.html

Both return an exit code from `main(argv)` so tests call them in-process.

Thread waiting: the console scripts go through `mtgfe.utils.entrypoints`, which sets
`OMP_WAIT_POLICY=PASSIVE` (unless the user did) before this module, and with it torch, is imported.
"""

from __future__ import annotations

import argparse
import json
import math
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoProcessor

import modeling_mtgfe  # noqa: F401 - importing the package registers the Auto classes
from modeling_mtgfe.configuration_mtgfe import MAX_RETRIEVAL_ALPHA, RETRIEVAL_SCORES, resolve_retrieval_settings
from modeling_mtgfe.retrieval import IMAGE_EXTENSIONS
from mtgfe.utils.entrypoints import run_subcommand
from mtgfe.utils.io import FileFormatError, atomic_write_json, atomic_write_text, pickles_refused, read_json
from mtgfe.utils.validation import check_finite

from . import sharded_encode
from .gallery_index import BUILD_STATE_NAME, MANIFEST_NAME, GalleryIndex, IndexMismatchError
from .index_storage import IndexBusyError, index_write_lock, missing_folders, remove_created_folder
from .geo import hits_to_geojson, suppress_overlapping
from .explain import explain_results
from .like import search_like
from .report_html import is_match, write_contact_sheet, write_html
from .scene_index import (
    SceneSource,
    insert_before_body_end,
    is_tile_hit,
    parse_bands,
    scene_quicklooks_html,
    tile_image_loader,
)

logger = logging.getLogger(__name__)

TOKEN_DTYPES = ("bfloat16", "float16", "float32")


def load_model_and_processor(model_dir: str, processor_dir: str | None = None):
    """`AutoModel` + `AutoProcessor` from a saved folder (the package registers the MTGFE classes)."""
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"No model at {model_dir!r} (config.json missing).")
    with pickles_refused(f"--model {model_dir}"):
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
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise FileFormatError(f"captions file {path}:{number} is not valid JSON ({error.msg}).") from error
            if not isinstance(row, dict) or "filename" not in row:
                raise ValueError(f"{path}:{number}: a row needs 'filename' (and 'captions' or 'caption').")
            caps = row.get("captions") or ([row["caption"]] if "caption" in row else [])
            table.setdefault(row["filename"], []).extend(caps)
        return table
    data = read_json(path, what="captions file")  # a broken file is a FileFormatError naming it
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object mapping file names to caption lists.")
    return {k: [v] if isinstance(v, str) else list(v) for k, v in data.items()}


def _arg_positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (the message names the bad value)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _arg_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


def _arg_alpha(text: str) -> float:
    """argparse type: a finite float in [0, MAX_RETRIEVAL_ALPHA] (`nan`, `inf`, negatives, huge values are
    refused before any work; see `MAX_RETRIEVAL_ALPHA` for why there is a ceiling)."""
    try:
        return check_finite("--alpha", float(text), low=0.0, high=MAX_RETRIEVAL_ALPHA)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a finite number in [0, {MAX_RETRIEVAL_ALPHA:g}] (larger: use "
                                         f"--score filter), got {text!r}") from error


def check_output_path(path: str, flag: str) -> None:
    """Before any work: `path` must not be a folder and its nearest existing parent must be a writable folder
    (missing parent folders are created when writing)."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{flag} {path!r} is a folder; give a file name.")
    parent = target.parent if str(target.parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{flag} {path!r} cannot be created: {str(parent)!r} is not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path!r} cannot be created: {str(parent)!r} is not writable.")


def _interrupted(message: str) -> int:
    """Ctrl-C: one line instead of a traceback, exit status 130 (128 + SIGINT) like shells do."""
    print(f"\ninterrupted: {message}", file=sys.stderr)
    return 130


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


# ----------------------------------------------------------------------------------------------- mtgfe-index
def index_main(argv: list[str] | None = None) -> int:
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
    parser.add_argument("--batch-size", type=_arg_positive_int, default=32)
    parser.add_argument("--shard-size", type=_arg_positive_int, default=1024,
                        help="images per shard (the resume granularity)")
    parser.add_argument("--no-tokens", action="store_true",
                        help="store embeddings only (~1 KiB/image instead of ~97 KiB with the small preset); "
                             "re-ranking then needs the original files")
    parser.add_argument("--tokens-dtype", choices=TOKEN_DTYPES, default="float16",
                        help="fusion token storage (default float16: ΔmR 0.0 vs float32 in experiments/speed/measure_token_dtype.py)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted build in --output")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="skip (and list) files that cannot be decoded; skipped files are retried on every later "
                             "run (update or --resume), so a repaired file gets indexed")
    parser.add_argument("--verify-index", choices=("header", "full", "none"), default="header",
                        help="checks of an existing index against its manifest checksums before updating it")
    parser.add_argument("--lock-timeout", type=_arg_seconds, default=None, metavar="SECONDS",
                        help="how long to wait when another mtgfe-index is writing the same --output (default: until "
                             "it finishes; 0: fail at once). Writers queue so that neither loses the other's work")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true")
    _add_scene_arguments(parser)
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if args.delete and not (Path(args.output) / MANIFEST_NAME).is_file():  # before the lock, which creates the folder
        print(f"error: {args.output} holds no index ({MANIFEST_NAME} is missing): nothing to delete from",
              file=sys.stderr)
        return 2

    # The inputs that do not depend on the index (model, captions) are read before the lock, which creates the
    # output folder: a typo there is refused without leaving a folder behind.
    try:
        model, processor = load_model_and_processor(args.model, args.processor)
        captions = _read_captions(args.captions) if args.images else {}
    except (FileNotFoundError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    def waiting(holder: str) -> None:
        print(f"mtgfe-index: another writer ({holder}) is writing {args.output}; waiting for it to finish "
              "(--lock-timeout to bound the wait)", file=sys.stderr, flush=True)

    created = missing_folders(args.output)  # removed again if the build fails before committing anything
    status = 2
    try:
        status = _index_locked(args, model, processor, captions, waiting)
        return status
    finally:
        if status != 0 and created:
            remove_created_folder(args.output, created)


def _index_locked(args: argparse.Namespace, model, processor, captions: dict, waiting) -> int:
    """The index write of `index_main`, under the folder's write lock; every failure becomes status 2 (or
    the interruption's status) with one line naming the folder."""
    try:
        with index_write_lock(args.output, timeout=args.lock_timeout, on_wait=waiting):
            if args.scenes:
                return _index_scenes(args, model, processor)
            if args.delete:
                return _delete_items(args, model, processor)
            return _index(args, model, processor, captions)
    except IndexBusyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # disk full, quota, read-only or unwritable folder: the environment, not the data
        print(f"error: {_write_failure(error, Path(args.output))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        output = Path(args.output)
        if (output / BUILD_STATE_NAME).is_file():
            return _interrupted(f"the shards written so far are kept in {output}; run the same command with "
                                "--resume to continue the build.")
        return _interrupted(f"nothing new was written to {output}; run the same command again to index the files.")


def _write_failure(error: OSError, output: Path) -> str:
    """One line for an index write that failed (disk full, quota, permissions): what failed, on which file,
    and what state the index is in. Every file is written to a temporary name and renamed, and the manifest
    (or build state) last, so the previous version is still the one that loads."""
    what = error.strerror or str(error)
    where = f" ({error.filename})" if error.filename else ""
    if (output / BUILD_STATE_NAME).is_file():
        state = ("the shards finished before it are kept; free space (or fix the folder) and rerun the same command "
                 "with --resume")
    elif (output / MANIFEST_NAME).is_file():
        state = ("the index still holds its last saved version (its manifest is written last); free space (or fix "
                 "the folder) and rerun the same command")
    else:
        state = "no usable index was written; free space (or fix the folder) and rerun the same command"
    return f"cannot write the index in {output}: {what}{where}; {state}."


def _index(args, model, processor, captions: dict[str, list[str]]) -> int:
    try:
        output = Path(args.output)
        if (output / MANIFEST_NAME).is_file():
            index = GalleryIndex.load(output, model=model, processor=processor, verify=args.verify_index)
            before = list(index.manifest.get("skipped", []))
            added = index.add(args.images, batch_size=args.batch_size, skip_unreadable=args.skip_unreadable,
                              captions=captions, progress=not args.quiet)
            if added or index.manifest.get("skipped", []) != before:
                index.save(output, shard_size=args.shard_size)
            print(f"Updated {output}: {added} new image(s), {len(index)} in total.")
            skipped = index.manifest.get("skipped", [])  # every one was retried in this run
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
def _printable(text: str) -> str:
    """`text` with control characters escaped (`\n`, `\x1b`): a file name holding a newline or a terminal
    escape must not split the table or drive the terminal."""
    return text if text.isprintable() else "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _table(results: list[dict]) -> str:
    lines = []
    for result in results:
        query = result["query"]
        lines.append(f"query: {_printable(str(query))}")
        lines.append(f"  {'rank':>4}  {'score':>8}  {'filter':>8}  gt  result")
        for hit in result["hits"]:
            match = is_match(query, hit)
            mark = "✓" if match else "·" if match is False else " "
            target = _printable(str(hit.get("image", hit.get("text"))))
            lines.append(f"  {hit['rank']:>4}  {hit['score']:>8.4f}  {hit['filter_score']:>8.4f}  {mark:^2}  {target}")
            if hit.get("map_words"):
                words = ", ".join(f"{word} {100 * share:.0f}%" for word, share in hit["map_words"])
                lines.append(f"  {'':>4}  where (fusion layer {hit['map_layer']}): {words}")
    return "\n".join(lines)


def search_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mtgfe-search", description="Search an index with text (or image) queries.")
    parser.add_argument("--index", required=True, help="index folder written by mtgfe-index")
    parser.add_argument("--model", required=True, help="the model folder that built the index")
    parser.add_argument("--processor", default=None)
    parser.add_argument("queries", nargs="*",
                        help="queries: text by default; an existing image file is an image query (for a caption index)")
    parser.add_argument("--like", action="append", default=None, metavar="HIT_ID",
                        help="more like this: search with an indexed image (its row, a hit's \"index\", or its file "
                             "name) instead of queries; repeat to start from several. Ranked by the image-image "
                             "filter cosine (the model's fusion scores image-text pairs only)")
    parser.add_argument("--not", dest="exclude", action="append", default=None, metavar="HIT_ID",
                        help="with --like: leave this item out of the results (repeatable)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--text", dest="query_type", action="store_const", const="text",
                      help="every query is text, even one that names an existing file or ends in .png")
    kind.add_argument("--image", dest="query_type", action="store_const", const="image",
                      help="every query is an image path (searches a caption index)")
    parser.add_argument("--k", type=_arg_positive_int, default=None,
                        help="filter candidates re-ranked per query (default: the model config's retrieval_k)")
    parser.add_argument("--top-k", type=_arg_positive_int, default=5, help="results shown per query")
    parser.add_argument("--score", choices=RETRIEVAL_SCORES, default=None,
                        help="ranking of the shortlist (default: the model config's retrieval_score)")
    parser.add_argument("--alpha", type=_arg_alpha, default=None,
                        help="filter weight in itm+itc (default: the model config's retrieval_alpha, else 1.0)")
    parser.add_argument("--html", default=None, help="write a self-contained HTML page")
    parser.add_argument("--png", default=None, help="write a contact sheet")
    parser.add_argument("--json", default=None, help="write the raw results")
    parser.add_argument("--explain", action="store_true",
                        help="add each hit's grounding map (where the query matched, from the stored tokens) and "
                             "the query words behind it: drawn over the thumbnails in --html, lists in --json")
    parser.add_argument("--map-layer", type=int, default=None,
                        help="fusion layer of the --explain maps (default: the middle fusion layer)")
    parser.add_argument("--verify-index", choices=("header", "full", "none"), default="header",
                        help="check the index files against the manifest: sizes + headers + embeddings (header, "
                             "default), every byte (full) or nothing (none)")
    parser.add_argument("-v", "--verbose", action="store_true")
    _add_place_arguments(parser)
    args = parser.parse_args(argv)
    if bool(args.queries) == bool(args.like):
        parser.error("give queries or --like HIT_ID (one of the two)")
    if args.exclude and not args.like:
        parser.error("--not only applies with --like")
    if args.like and args.explain:
        parser.error("--explain maps a text query onto its hits; --like has no text query")
    _setup_logging(args.verbose)
    try:
        for flag in ("html", "png", "json", "geojson"):  # before the search: a bad output path must not waste it
            if getattr(args, flag):
                check_output_path(getattr(args, flag), f"--{flag}")
        model, processor = load_model_and_processor(args.model, args.processor)
        index = GalleryIndex.load(args.index, model=model, processor=processor, verify=args.verify_index)
        _check_place_flags(args, index)
        k, score, alpha = resolve_retrieval_settings(model.config, args.k, args.score, args.alpha)
        if args.like:
            hits = [search_like(index, args.like, args.exclude or (), top_k=args.top_k)]
            score = "image-image filter cosine"
            label = "more like " + ", ".join(args.like) + ("; not " + ", ".join(args.exclude) if args.exclude else "")
            results: list[dict[str, Any]] = [{"query": label, "hits": hits[0]}]
        else:
            queries = _typed_queries(list(args.queries), args.query_type, index.kind)
            hits = index.search(queries, k=k, top_k=args.top_k, score=score, alpha=alpha)
            results = [{"query": q, "hits": h} for q, h in zip(args.queries, hits)]
        _check_finite_scores(results)
        results = _apply_nms(results, args)
        if args.explain:
            explain_results(index, model, processor, results, layer=args.map_layer)
    except (FileNotFoundError, ValueError, IndexMismatchError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return _interrupted("search stopped; nothing was written (run the same command again).")
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
        unreadable = _append_quicklooks(args.html, results, args.quicklook_dir) if loader else []
        print(f"wrote {args.html}")
        if unreadable:
            print(f"WARNING: {len(unreadable)} scene(s) could not be read, so {args.html} shows no quicklook for "
                  "them (moved or deleted since indexing? put them back, or index them again):", file=sys.stderr)
            for line in unreadable:
                print(f"  {line}", file=sys.stderr)
    if args.png:
        write_contact_sheet(args.png, results, **({"image_loader": loader} if loader else {}))
        print(f"wrote {args.png}")
    if args.json:
        atomic_write_json(args.json, results, indent=1, allow_nan=False)
    return 0


def _check_finite_scores(results: list[dict]) -> None:
    """Refuse hits whose scores are NaN or infinite (damaged weights, or an overflow): they would rank
    arbitrarily, and JSON / GeoJSON cannot hold them (`-Infinity` is not JSON; strict readers reject it)."""
    for result in results:
        for hit in result["hits"]:
            values = [hit.get(key) for key in ("score", "filter_score")]
            if any(isinstance(v, float) and not math.isfinite(v) for v in values):
                raise ValueError(f"query {result['query']!r}: the scores of {hit.get('image', hit.get('text'))!r} are "
                                 f"not finite ({', '.join(str(v) for v in values if v is not None)}); the model "
                                 "outputs NaN/inf (damaged weights?). Nothing was written.")


def _typed_queries(queries: list[str], query_type: str | None, index_kind: str) -> list[str]:
    """Decide the query kind: `--text` / `--image`, else text unless the string is an existing image file.

    Text queries search an image index, image queries a caption index; a mismatch is an error that says
    which flag to use (so "harbor.png" typed as a description is never opened as a file by surprise).
    """
    def is_image(q: str) -> bool:
        if query_type is not None:
            return query_type == "image"
        return q.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(q)

    kinds = {is_image(q) for q in queries}
    if len(kinds) > 1:
        raise ValueError("The queries mix image files and text: pass --text (all text) or --image (all image paths).")
    image = kinds.pop()
    if image and index_kind != "texts":
        raise ValueError(f"{queries[0]!r} is an image file, but this index holds images (text→image search): pass "
                         "--text to search for the string as a description, or search a caption index.")
    if not image and index_kind == "texts":
        raise ValueError("This index holds captions (image→text search): give image files as queries (--image).")
    if image:
        missing = [q for q in queries if not os.path.isfile(q)]
        if missing:
            raise ValueError(f"Image query file(s) not found: {missing}.")
    return queries


# ----------------------------------------------------------------------------------------------- scenes
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


def _index_scenes(args, model, processor) -> int:
    """`mtgfe-index --scenes`: tile scenes through `iter_tiles` and index the tiles (resumable like image builds)."""
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


def _delete_items(args, model, processor) -> int:
    """`mtgfe-index --delete ID ...`: tombstone items (`GalleryIndex.delete`, persisted atomically)."""
    try:
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


def _arg_iou(text: str) -> float:
    """argparse type for --nms / --merge: an overlap in [0, 1], checked before the index is loaded."""
    try:
        return check_finite("IOU", float(text), low=0.0, high=1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an overlap (IoU) between 0 and 1, got {text!r}") from None


def _check_place_flags(args, index) -> None:
    """--geojson / --nms / --merge need tile footprints: refused for an image-file index before the search
    runs (its cost would be wasted), not after."""
    wanted = [flag for flag in ("geojson", "nms", "merge") if getattr(args, flag) is not None]
    if wanted and not any(isinstance(item, dict) and "scene" in item for item in index.items):
        flags = " / ".join(f"--{flag}" for flag in wanted)
        raise ValueError(f"{flags} need a scene index (built with mtgfe-index --scenes); {args.index} holds image "
                         "files without footprints.")


def _add_place_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("places (scene indexes)")
    group.add_argument("--geojson", default=None, help="write hits as a GeoJSON FeatureCollection (RFC 7946)")
    nms = group.add_mutually_exclusive_group()
    nms.add_argument("--nms", type=_arg_iou, default=None, metavar="IOU",
                     help="drop hits overlapping a better hit of the same scene by more than IOU (0..1)")
    nms.add_argument("--merge", type=_arg_iou, default=None, metavar="IOU",
                     help="merge hits overlapping by more than IOU (0..1) into one union box")
    group.add_argument("--quicklook-dir", default=None,
                       help="where --html leaves the scene quicklook PNGs (default: beside the HTML)")


def _apply_nms(results: list[dict], args) -> list[dict]:
    if args.nms is None and args.merge is None:
        return results
    if not any(is_tile_hit(h) for r in results for h in r["hits"]):
        raise ValueError("--nms / --merge need a scene index (built with mtgfe-index --scenes).")
    mode, iou = ("suppress", args.nms) if args.nms is not None else ("merge", args.merge)
    return [{**r, "hits": suppress_overlapping(r["hits"], iou_threshold=iou, mode=mode)} for r in results]


def _write_place_outputs(results: list[dict], args):
    """GeoJSON of tile hits; returns a thumbnail loader for scene hits (None for an image-file index)."""
    tile_hits = [h for r in results for h in r["hits"] if is_tile_hit(h)]
    if args.geojson:
        if not tile_hits:
            raise ValueError("--geojson needs a scene index (built with mtgfe-index --scenes): these hits have no footprint.")
        collections = [hits_to_geojson(r["hits"], query=r["query"]) for r in results]
        merged = collections[0] if len(collections) == 1 else {
            "type": "FeatureCollection", "features": [f for c in collections for f in c["features"]]}
        atomic_write_json(args.geojson, merged, indent=1, allow_nan=False)
        print(f"wrote {args.geojson}")
    if not tile_hits:
        return None
    return tile_image_loader({h["image"]: h for h in tile_hits})


def _append_quicklooks(html_path: str, results: list[dict], quicklook_dir: str | None = None) -> list[str]:
    """Embed one quicklook per (query, scene) with the hits drawn as ranked boxes, after the thumbnails.
    Returns one line per scene that could not be read (moved since indexing): the page says so in its place."""
    path = Path(html_path)
    folder = Path(quicklook_dir) if quicklook_dir else path.parent / (path.stem + "_quicklooks")
    unreadable: list[str] = []
    fragment = scene_quicklooks_html(results, folder, unreadable=unreadable)
    atomic_write_text(path, insert_before_body_end(path.read_text(encoding="utf-8"), fragment))
    return unreadable


def sharded_encode_main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from datasets import load_from_disk

    parser = argparse.ArgumentParser(prog="python -m mtgfe.search.cli sharded-encode")
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset-dir", required=True, help="a `datasets` images view saved with save_to_disk")
    parser.add_argument("--output", required=True)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backend", default=None, help="e.g. gloo on CPU")
    args = parser.parse_args(argv)
    model, processor = load_model_and_processor(args.model)
    sharded_encode.run(model, processor, load_from_disk(args.dataset_dir), args.output, chunk_size=args.chunk_size,
        batch_size=args.batch_size, backend=args.backend)
    return 0


COMMANDS = {"index": index_main, "search": search_main, "sharded-encode": sharded_encode_main}


if __name__ == "__main__":  # pragma: no cover - `python -m mtgfe.search.cli {index,search,sharded-encode} ...`
    sys.exit(run_subcommand("mtgfe.search.cli", COMMANDS))
