"""How much does storing fusion tokens in float16 / bfloat16 change ITM scores and mR?

Model: `--model DIR` (a saved MTGFE folder), else the `small` preset (EfficientNet-Lite0 + MiniLM-L6-sized 3+3), **random init** (torch seed 0, no
pretrained weights loaded), so this measures numeric error of the token dtype, not retrieval quality.
Data: UCM-Captions test split (first `--max-images` images, all their captions). Tokens are encoded once
in fp32, then cast to each dtype and re-ranked with the same k; the reference is fp32.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python experiments/speed/measure_token_dtype.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--max-images", type=int, default=210)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--output", default=None)
    parser.add_argument("--model", default=None, help="a saved MTGFE folder (default: the small preset, random init)")
    args = parser.parse_args()
    from modeling_mtgfe import MTGFEConfig, MTGFEModel
    from modeling_mtgfe.retrieval import encode_images, encode_texts, rerank
    from mtgfe.processing import MTGFEImageProcessor, MTGFEProcessor, load_default_tokenizer
    from mtgfe.evaluation.retrieval import dataset_image_sources, flatten_captions, load_eval_dataset
    from mtgfe.evaluation.metrics import retrieval_metrics

    if args.model:
        model = MTGFEModel.from_pretrained(args.model).eval()
        processor = MTGFEProcessor.from_pretrained(args.model)
    else:
        torch.manual_seed(0)
        model = MTGFEModel(MTGFEConfig.from_preset("small")).eval()
        size = int(model.config.image_size or 256)
        processor = MTGFEProcessor(MTGFEImageProcessor(size={"height": size, "width": size}), load_default_tokenizer())
    data = load_eval_dataset("ucm", "test", data_dir=args.data_dir, max_images=args.max_images)
    texts, txt2img = flatten_captions(data)
    t0 = time.perf_counter()
    with torch.no_grad():
        image_feats = encode_images(model, processor, dataset_image_sources(data), batch_size=16, progress=False)
        text_feats = encode_texts(model, processor, texts, progress=False)
    encode_s = time.perf_counter() - t0
    txt2img_t = torch.tensor(txt2img)
    img2txt = [[t for t, i in enumerate(txt2img) if i == img] for img in range(len(data))]
    results, reference = {}, None
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        feats = type(image_feats)(embeds=image_feats.embeds, tokens=image_feats.tokens.to(dtype))
        t0 = time.perf_counter()
        with torch.no_grad():
            out = rerank(model, feats, text_feats, k=args.k, direction="both", score="itm")
        i2t = out.scores_i2t[:, text_feats.inverse]
        t2i = out.scores_t2i[text_feats.inverse]
        metrics = retrieval_metrics(i2t, txt2img_t, img2txt, scores_t2i=t2i)
        name = str(dtype).replace("torch.", "")
        entry = {"mR": metrics["mR"], "rerank_s": round(time.perf_counter() - t0, 1),
                 "bytes_per_item": int(image_feats.tokens[0].numel() * dtype.itemsize)}
        if reference is None:
            reference = (i2t, t2i, metrics["mR"])
        else:
            finite = torch.isfinite(reference[0]) & torch.isfinite(i2t)
            diff = (i2t[finite] - reference[0][finite]).abs()
            order_ref = torch.argsort(reference[1], dim=1, descending=True, stable=True)[:, :10]
            order = torch.argsort(t2i, dim=1, descending=True, stable=True)[:, :10]
            entry.update(max_abs_itm_diff=float(diff.max()), mean_abs_itm_diff=float(diff.mean()),
                         delta_mR=metrics["mR"] - reference[2],
                         t2i_top10_identical_fraction=float((order == order_ref).all(dim=1).float().mean()))
        results[name] = entry
        print(name, json.dumps(entry), flush=True)
    report = {"model": args.model or "small preset, random init (seed 0)", "data": f"UCM test, first {len(data)} images, "
              f"{len(texts)} captions", "k": args.k, "encode_s": round(encode_s, 1), "dtypes": results,
              "token_shape": list(image_feats.tokens.shape[1:])}
    print(json.dumps(report, indent=1))
    if args.output:
        from mtgfe.utils.io import atomic_write_json

        atomic_write_json(args.output, report, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
