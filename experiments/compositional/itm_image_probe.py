"""Does a trained model's ITM look at the image at all?

24 UCM *val* images (evenly spaced, so about one per class), the first caption of each; every caption is
scored against every image by ITM. Reports the ITM logit's spread over images for a fixed caption (0 for a
text-only scorer), over captions for a fixed image, the mean logit of true vs other pairs, and ITM-alone
image->text R@1 among the 24 (chance 1/24 = 0.042). With `--pairs N`: the four ITM probabilities of each of
the first N UCM *val* pair items (image a/b x caption a/b), which shows a text prior directly: a scorer that
prefers one caption for both images.

  OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python experiments/compositional/itm_image_probe.py MODEL_DIR [--data-dir D]
"""
import argparse
import json

import numpy as np
import torch

from modeling_mtgfe import MTGFEForPreTraining
from mtgfe.processing import MTGFEProcessor, load_image
from mtgfe.evaluation.compositional.generation import generate_items
from mtgfe.data.annotations import load_rs_benchmark


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--pairs", type=int, default=0, help="also print ITM of the first N ucm_val pair items")
    args = parser.parse_args()
    model = MTGFEForPreTraining.from_pretrained(args.model).eval()
    proc = MTGFEProcessor.from_pretrained(args.model)
    ds = load_rs_benchmark("ucm", data_dir=args.data_dir, split="val", view="images")
    rows = ds.select(np.linspace(0, len(ds) - 1, args.images).round().astype(int).tolist())
    captions = [c[0] for c in rows["captions"]]
    n = len(captions)
    with torch.no_grad():
        pixels = proc(images=[load_image(x) for x in rows["image"]], return_tensors="pt")["pixel_values"]
        _, tokens = model.mtgfe.encode_image(pixel_values=pixels)
        enc = proc(text=captions, return_tensors="pt", padding=True)
        states = model.mtgfe.encode_text(enc["input_ids"], enc["attention_mask"])
        image_index, text_index = torch.arange(n).repeat_interleave(n), torch.arange(n).repeat(n)
        logits = model.mtgfe.compute_itm_scores(tokens, states, enc["attention_mask"], image_index=image_index,
                                                 text_index=text_index, return_logits=True)
    margin = (logits[:, 1] - logits[:, 0]).view(n, n)  # [image, text]
    off = (margin.sum() - margin.diag().sum()) / (n * n - n)
    print(json.dumps({
        "model": args.model, "images": n,
        "logit_std_over_images": round(margin.std(0).mean().item(), 4),
        "logit_std_over_captions": round(margin.std(1).mean().item(), 4),
        "true_pair_mean": round(margin.diag().mean().item(), 4), "other_pair_mean": round(off.item(), 4),
        "i2t_R@1": round((margin.argmax(1) == torch.arange(n)).float().mean().item(), 4),
    }))
    for item in generate_items("ucm_val", "pairs", args.data_dir)[:args.pairs]:
        with torch.no_grad():
            pixels = proc(images=[load_image(item["image"]), load_image(item["image_b"])], return_tensors="pt")
            _, tokens = model.mtgfe.encode_image(pixel_values=pixels["pixel_values"])
            enc = proc(text=[item["caption"], item["negative"]], return_tensors="pt", padding=True)
            states = model.mtgfe.encode_text(enc["input_ids"], enc["attention_mask"])
            p = model.mtgfe.compute_itm_scores(tokens, states, enc["attention_mask"],
                                               image_index=torch.tensor([0, 0, 1, 1]), text_index=torch.tensor([0, 1, 0, 1]))
        print(json.dumps({"caption_a": item["caption"], "caption_b": item["negative"],
                          "image_a": [round(float(p[0]), 3), round(float(p[1]), 3)],
                          "image_b": [round(float(p[2]), 3), round(float(p[3]), 3)]}))


if __name__ == "__main__":
    main()
