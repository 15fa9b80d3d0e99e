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
import logging
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoProcessor

import modeling_mtgfe  # noqa: F401 - importing the package registers the Auto classes
from modeling_mtgfe.configuration_mtgfe import RETRIEVAL_SCORES
from modeling_mtgfe.pipeline_mtgfe import resolve_search_defaults
from mtgfe.utils.io import atomic_write_json, read_json

from .gallery_index import BUILD_STATE_NAME, MANIFEST_NAME, GalleryIndex, IndexMismatchError
from .report_html import is_match, write_contact_sheet, write_html

logger = logging.getLogger(__name__)

TOKEN_DTYPES = ("bfloat16", "float16", "float32")


def load_model_and_processor(model_dir: str, processor_dir: str | None = None):
    """`AutoModel` + `AutoProcessor` from a saved folder (the package registers the MTGFE classes)."""
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
    parser = argparse.ArgumentParser(prog="mtgfe-index", description="Encode an image folder into a search index.")
    parser.add_argument("--model", required=True, help="saved MTGFE model folder (with processor files)")
    parser.add_argument("--processor", default=None, help="processor folder, if not beside the model")
    parser.add_argument("--images", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--output", required=True, help="index folder; an existing index is updated with new files")
    parser.add_argument("--captions", default=None, help="optional JSON/JSONL ground-truth captions (for ✓ marks)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=1024, help="images per shard (the resume granularity)")
    parser.add_argument("--no-tokens", action="store_true",
                        help="store embeddings only (~1 KiB/image instead of ~97 KiB with the small preset); "
                             "re-ranking then needs the original files")
    parser.add_argument("--tokens-dtype", choices=TOKEN_DTYPES, default="float32")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted build in --output")
    parser.add_argument("--skip-unreadable", action="store_true", help="skip (and list) files that cannot be decoded")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if args.batch_size < 1 or args.shard_size < 1:
        parser.error("--batch-size and --shard-size must be >= 1")
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
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        model, processor = load_model_and_processor(args.model, args.processor)
        index = GalleryIndex.load(args.index, model=model, processor=processor)
        k, score, alpha = resolve_search_defaults(model, args.k, args.score, args.alpha)
        hits = index.search(list(args.queries), k=k, top_k=args.top_k, score=score, alpha=alpha)
    except (FileNotFoundError, ValueError, IndexMismatchError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results: list[dict[str, Any]] = [{"query": q, "hits": h} for q, h in zip(args.queries, hits)]
    print(_table(results))
    meta = {"index": args.index, "model": args.model, "k": k, "score": score, "images": len(index)}
    if args.html:
        write_html(args.html, results, meta=meta)
        print(f"wrote {args.html}")
    if args.png:
        write_contact_sheet(args.png, results)
        print(f"wrote {args.png}")
    if args.json:
        atomic_write_json(args.json, results, indent=1)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(search_main())
