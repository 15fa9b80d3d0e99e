"""Human-readable search reports: a self-contained HTML page and a PNG contact sheet.

Why self-contained: result pages get mailed around and opened on machines without the archive, so
thumbnails are embedded as base64 JPEG and there are no external assets. A ✓ marks a hit whose
ground-truth captions (when the gallery has them) contain the query, after normalisation. A hit with a
grounding map (`"map"`, from `mtgfe.search.explain`) gets it drawn over its thumbnail as a semi-transparent
PNG (red where the query matched, scaled to the hit's own maximum), with the query words that carry it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from mtgfe.processing.image_decoding import load_image  # RS-robust: 16-bit TIFF, multi-band, palette
from mtgfe.utils.io import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

ImageLoader = Callable[[Any], Image.Image]


def normalize_caption(text: str) -> str:
    """Lowercase, collapse whitespace, drop trailing punctuation: how captions are compared for ✓ marks."""
    return re.sub(r"\s+", " ", text.lower()).strip().rstrip(".!?;, ").strip()


def is_match(query: Any, hit: dict) -> bool | None:
    """True/False when the hit has ground truth to judge by, None when it has none."""
    if hit.get("match") is not None:  # the caller judged it (e.g. from a scene graph)
        return bool(hit["match"])
    if not isinstance(query, str):
        return None
    if hit.get("captions"):
        wanted = normalize_caption(query)
        return any(normalize_caption(c) == wanted for c in hit["captions"])
    return None


def _default_loader(source: Any) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    return load_image(source)


def _thumbnail(source: Any, size: int, loader: ImageLoader) -> Image.Image | None:
    try:
        image = loader(source).convert("RGB")
    except (OSError, ValueError, TypeError) as error:  # decode errors are ValueErrors (ImageDecodeError)
        logger.warning("No thumbnail for %r: %s", source, error)
        return None
    return ImageOps.contain(image, (size, size))  # up- or down-scaled to fit, aspect kept


def _jpeg_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def heat_overlay(grid_map: Any, size: tuple[int, int]) -> Image.Image:
    """RGBA image of `size` (width, height): a `(rows, cols)` map, scaled to its maximum, upsampled bilinearly
    over the whole image (the grid covers the image the model saw), red-to-yellow with alpha rising with the
    value, so low cells leave the thumbnail visible."""
    values = np.asarray(grid_map, dtype=np.float32)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"A grounding map must be a non-empty (rows, cols) grid; got shape {values.shape}.")
    values = np.nan_to_num(values, nan=0.0).clip(min=0.0)
    peak = float(values.max())
    values = values / peak if peak > 0 else values
    scaled = np.asarray(Image.fromarray(values, mode="F").resize(size, Image.BILINEAR)).clip(0.0, 1.0)
    rgba = np.zeros((size[1], size[0], 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[..., 1] = (200 * scaled).astype(np.uint8)
    rgba[..., 3] = (170 * scaled).astype(np.uint8)
    return Image.fromarray(rgba, mode="RGBA")


def _png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em} h2{font-size:1.1em;margin-top:1.6em}
.row{display:flex;flex-wrap:wrap;gap:12px}
.hit{width:%(w)dpx;border:3px solid #ddd;border-radius:6px;padding:4px;font-size:12px}
.hit.ok{border-color:#2a2} .hit.no{border-color:#ddd}
.hit img{width:%(w)dpx;height:auto;display:block}
.missing{width:%(w)dpx;height:%(w)dpx;background:#eee;display:flex;align-items:center;justify-content:center;color:#888}
.name{word-break:break-all;color:#555} .mark{color:#2a2;font-weight:bold}
.meta{color:#777;font-size:12px}
.compare{display:flex;flex-wrap:nowrap;gap:24px} .compare h3{font-size:13px;margin:4px 0} .compare .row{flex-wrap:nowrap;gap:6px}
.detail{color:#333;font-size:11px}
.thumb{position:relative} .thumb img.heat{position:absolute;top:0;left:0}
.words{color:#a40;font-size:11px}
table.t{border-collapse:collapse;font-size:13px} table.t td,table.t th{border:1px solid #ccc;padding:3px 8px;text-align:right}
table.t th:first-child,table.t td:first-child{text-align:left}
"""


def render_html(
    results: Sequence[dict],
    title: str = "MTGFE search results",
    thumbnail_size: int = 160,
    image_loader: ImageLoader | None = None,
    meta: dict | None = None,
    extra_html: Sequence[str] | None = None,
) -> str:
    """One section per query: rank, score, filter score, ✓ and an embedded thumbnail per hit.

    `results`: `[{"query": str | image, "hits": [{"image" or "text", "score", "filter_score", "rank",
    "captions"?, "match"?}, ...]}, ...]`. A result with `"columns": {heading: hits}` shows each list
    side by side under its heading (e.g. the filter's top-k beside the re-ranked top-k); `"note"` adds a
    line under the query; a hit's `"match"` (bool) overrides the caption test for its ✓ and its `"detail"` is printed under it;
    `"itm_score"` is shown apart from the ranking score, and `"map"` / `"map_words"` draw the grounding map. `extra_html`:
    trusted HTML fragments placed before the queries (tables of numbers).
    """
    loader = image_loader or _default_loader
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS % {'w': thumbnail_size}}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    info = {"generated": _dt.datetime.now().isoformat(timespec="seconds"), **(meta or {})}
    parts.append("<p class='meta'>" + " · ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in info.items()) + "</p>")
    parts.extend(extra_html or [])
    for result in results:
        query = result["query"]
        label = query if isinstance(query, str) else os.fspath(query) if isinstance(query, os.PathLike) else "image query"
        parts.append(f"<h2 class='query'>{html.escape(str(label))}</h2>")
        if result.get("note"):
            parts.append(f"<p class='meta'>{html.escape(str(result['note']))}</p>")
        columns = result.get("columns") or {"": result["hits"]}  # {heading: hits}: shown side by side
        parts.append("<div class='compare'>" if len(columns) > 1 else "")
        for heading, hits in columns.items():
            parts.append(f"<div><h3>{html.escape(heading)}</h3><div class='row'>" if heading else "<div><div class='row'>")
            parts.extend(_hit_cells(query, hits, thumbnail_size, loader))
            parts.append("</div></div>")
        parts.append("</div>" if len(columns) > 1 else "")
    parts.append("</body></html>")
    return "\n".join(parts)


def _hit_cells(query, hits, thumbnail_size: int, loader: ImageLoader) -> list[str]:
    parts = []
    for hit in hits:
        match = is_match(query, hit)
        css = "hit ok" if match else "hit no" if match is False else "hit"
        mark = "<span class='mark' title='matches the query (ground-truth caption or scene graph)'>✓</span> " if match else ""
        if "text" in hit and "image" not in hit:
            body = f"<div>{html.escape(hit['text'])}</div>"
            name = ""
        else:
            thumb = _thumbnail(hit["image"], thumbnail_size, loader)
            body = (f"<img src='{_jpeg_data_uri(thumb)}' alt='{html.escape(str(hit['image']))}'>" if thumb
                    else "<div class='missing'>no preview</div>")
            if thumb and hit.get("map") is not None:
                heat = _png_data_uri(heat_overlay(hit["map"], thumb.size))
                body = (f"<div class='thumb'>{body}<img class='heat' src='{heat}' "
                        f"alt='grounding map' title='where the query matched (fusion layer {hit.get('map_layer')})'></div>")
            shown = os.path.basename(str(hit["image"])) if isinstance(hit["image"], (str, os.PathLike)) else str(hit["image"])
            name = f"<div class='name' title='{html.escape(str(hit['image']))}'>{html.escape(shown)}</div>"
        parts.append(
            f"<div class='{css}' data-rank='{hit['rank']}'>{body}"
            f"<div>{mark}#{hit['rank']} score {hit['score']:.4f}</div>"
            + (f"<div>ITM {hit['itm_score']:.4f}</div>" if hit.get("itm_score") is not None else "")
            + f"<div>filter {hit['filter_score']:.4f}</div>{name}"
            + (f"<div class='words'>where: {html.escape(_words_text(hit['map_words']))}</div>"
               if hit.get("map_words") else "")
            + (f"<div class='detail'>{html.escape(str(hit['detail']))}</div>" if hit.get("detail") else "") + "</div>"
        )
    return parts


def _words_text(words) -> str:
    """`[[word, share], ...]` → "red 77% · cars 15%": the query words the map's mass comes from."""
    return " · ".join(f"{word} {100 * float(share):.0f}%" for word, share in words)


def write_html(path: str | os.PathLike, results: Sequence[dict], **kwargs) -> str:
    """Render and write atomically (`mtgfe.utils.io`: a mailed-around page is never half written); returns the path."""
    path = os.fspath(path)
    atomic_write_text(path, render_html(results, **kwargs))
    return path


def render_contact_sheet(
    results: Sequence[dict],
    thumbnail_size: int = 128,
    image_loader: ImageLoader | None = None,
) -> Image.Image:
    """A grid: one row per query (its text on top), one cell per hit with rank/score; green frame = ✓."""
    loader = image_loader or _default_loader
    font = ImageFont.load_default()
    columns = max((len(r["hits"]) for r in results), default=1) or 1
    pad, header, footer = 6, 18, 28
    cell_w, cell_h = thumbnail_size + 2 * pad, thumbnail_size + footer + 2 * pad
    sheet = Image.new("RGB", (columns * cell_w, len(results) * (cell_h + header)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, result in enumerate(results):
        top = row * (cell_h + header)
        query = result["query"]
        label = query if isinstance(query, str) else str(getattr(query, "filename", "") or query)
        draw.text((pad, top + 3), str(label)[:160], fill="black", font=font)
        for col, hit in enumerate(result["hits"]):
            x, y = col * cell_w + pad, top + header + pad
            match = is_match(query, hit)
            if "image" in hit:
                thumb = _thumbnail(hit["image"], thumbnail_size, loader)
                if thumb is not None:
                    sheet.paste(thumb, (x, y))
                else:
                    draw.rectangle([x, y, x + thumbnail_size, y + thumbnail_size], fill="#eeeeee")
            else:
                draw.multiline_text((x, y), _wrap(hit.get("text", ""), 22), fill="black", font=font)
            if match:
                draw.rectangle([x - 3, y - 3, x + thumbnail_size + 2, y + thumbnail_size + 2], outline="#22aa22", width=3)
            mark = " OK" if match else ""
            draw.text((x, y + thumbnail_size + 3), f"#{hit['rank']}  score {hit['score']:.3f}{mark}", fill="black", font=font)
            draw.text((x, y + thumbnail_size + 15), f"filter {hit['filter_score']:.3f}", fill="#555555", font=font)
    return sheet


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line][:8])


def write_contact_sheet(path: str | os.PathLike, results: Sequence[dict], **kwargs) -> str:
    """Render and write the PNG atomically (tmp sibling + replace, `mtgfe.utils.io.atomic_path`); returns the path."""
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        render_contact_sheet(results, **kwargs).save(tmp, format="PNG")
    return path


__all__ = ["heat_overlay", "is_match", "normalize_caption", "render_contact_sheet", "render_html", "write_contact_sheet", "write_html"]
