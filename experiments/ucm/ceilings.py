"""What a UCM-Captions model *can* reach: class-level bounds and caption redundancy on a split.

Re-run: `python experiments/ucm/ceilings.py [--split test] [--model DIR] [--output experiments/ucm/ceilings_test.json]`.

UCM has 21 classes of 100 images (file names 1-2100 in class blocks; the split keeps 10 test
images per class) and its captions repeat within a class. Two reference scorers, evaluated with the
package's tie-aware metric (every tie rule):

* `class_oracle`: knows every image's and caption's class and nothing else (score 1 for the same
  class, 0 otherwise): what perfect scene classification buys when everything within a class ties.
* `class_oracle_plus_text`: the class oracle, with ties inside the class broken by the query caption's
  token overlap with the image's *own reference captions* (it reads the test annotations, so it is not
  a model: it shows how far within-class text detail can go when the captions are known exactly).

It also counts how often a test caption has a near-copy (token-set Jaccard >= 0.7, the trainer's
`itm_near_duplicate_overlap`) among the captions of *other* images of its class: those pairs cannot be
told apart by reading the caption, whatever the image model does.

With `--model`, a trained model's filter (ITC cosine) is decomposed the same way: how often its top-1
is of the right class, and the mR it gets when its scores are only allowed to order images *within*
the class oracle's ranking (class first, model cosine inside): the part of its score that comes from
within-class discrimination.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch


def image_class(filename: str) -> int:
    """UCM class of an image from its file name (`1.tif`..`2100.tif`, 100 per class)."""
    digits = re.sub(r"\D", "", Path(filename).stem)
    if not digits:
        raise ValueError(f"{filename!r} is not a UCM image name (expected a number, e.g. 417.tif)")
    return (int(digits) - 1) // 100


def main(argv=None) -> int:
    from modeling_mtgfe.losses import caption_overlap
    from mtgfe.processing import load_default_tokenizer
    from mtgfe.data.annotations import load_rs_benchmark
    from mtgfe.evaluation.metrics import all_tie_rules

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--model", default=None, help="a trained MTGFE folder: decompose its filter scores")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)

    rows = load_rs_benchmark("ucm", args.data_dir, split=args.split, view="captions")
    captions, image_ids = list(rows["caption"]), np.asarray(rows["image_id"])
    filenames = {int(i): f for i, f in zip(rows["image_id"], rows["filename"])}
    n_img = len(filenames)
    img_cls = np.array([image_class(filenames[i]) for i in range(n_img)])
    txt_cls = img_cls[image_ids]
    tokens = load_default_tokenizer()(captions, padding=True, return_tensors="pt")
    overlap = caption_overlap(tokens["input_ids"], tokens["attention_mask"], (0, 101, 102)).numpy()

    same_class = (img_cls[:, None] == txt_cls[None, :]).astype(np.float64)  # (images, captions)
    # best overlap of each caption with any reference caption of each image
    best = np.zeros((n_img, len(captions)))
    for image in range(n_img):
        best[image] = overlap[image_ids == image].max(0)
    reports = {
        "class_oracle": all_tie_rules(same_class, image_ids),
        "class_oracle_plus_text": all_tie_rules(same_class * 10 + best, image_ids),
    }
    if args.model:
        cosine = filter_scores(args.model, args.data_dir, args.split)
        top_i2t, top_t2i = cosine.argmax(1), cosine.argmax(0)
        reports["model_filter"] = all_tie_rules(cosine, image_ids)
        reports["class_oracle_then_model"] = all_tie_rules(same_class * 10 + cosine, image_ids)
        model_summary = {"model": args.model,
                         "i2t_top1_right_class": float((txt_cls[top_i2t] == img_cls).mean()),
                         "t2i_top1_right_class": float((img_cls[top_t2i] == txt_cls).mean())}
    other_same_class = (txt_cls[:, None] == txt_cls[None, :]) & (image_ids[:, None] != image_ids[None, :])
    near = (overlap >= 0.7) & other_same_class
    identical = (overlap >= 1.0) & other_same_class
    summary = {
        "split": args.split, "images": n_img, "captions": len(captions), "distinct_captions": len(set(captions)),
        "captions_with_a_near_copy_in_another_image_of_the_class": float(near.any(1).mean()),
        "captions_with_an_identical_copy_in_another_image_of_the_class": float(identical.any(1).mean()),
        "scorers": {name: {rule: {k: round(v, 2) for k, v in r.items() if k.endswith(("R@1", "R@5", "R@10")) or k == "mR"}
                           for rule, r in rules.items()} for name, rules in reports.items()},
    }
    if args.model:
        summary["model"] = model_summary
    text = json.dumps(summary, indent=2)
    sys.stdout.write(text + "\n")
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    return 0


def filter_scores(model_dir: str, data_dir, split: str) -> np.ndarray:
    """`(images, captions)` filter cosine of a trained model on the split (same encoders as mtgfe-eval)."""
    from modeling_mtgfe import MTGFEForPreTraining
    from modeling_mtgfe.retrieval import encode_images, encode_texts
    from mtgfe.processing import MTGFEProcessor
    from mtgfe.data.annotations import load_rs_benchmark
    from mtgfe.evaluation.retrieval import dataset_image_sources, flatten_captions

    model = MTGFEForPreTraining.from_pretrained(model_dir).eval()
    processor = MTGFEProcessor.from_pretrained(model_dir)
    dataset = load_rs_benchmark("ucm", data_dir, split=split, view="images")
    texts, _ = flatten_captions(dataset)
    images = encode_images(model, processor, dataset_image_sources(dataset), keep_tokens=False, progress=False)
    captions = encode_texts(model, processor, texts, keep_states=False, progress=False)
    return (images.embeds @ captions.embeds[captions.inverse].t()).float().numpy()


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())
