"""How far from the ceiling is the demo's held-out mR? A pessimistic oracle from the scene graphs.

    HF_HUB_OFFLINE=1 python experiments/synthetic_demo/oracle.py test     # the demo's 150-scene gallery

Each caption is parsed for its (count, colour, kind) mentions, ground words and river / sea; the scenes
whose graph agrees with all of them are "consistent" (relations are ignored, so the true ceiling is higher).
An oracle that ranks the consistent scenes first in random order has expected R@K = min(1, K / #consistent)
text -> image, and the hypergeometric chance that one of the image's own captions lands in the top K
image -> text. Prints the share of captions that single out their scene and that oracle's mR.
"""
import json, re, sys, math
from collections import Counter
from mtgfe.data import synthetic as S
from mtgfe.data.loading import load_dataset_split
split = sys.argv[1] if len(sys.argv) > 1 else "test"
ds = load_dataset_split("synthetic", split, "images", max_images=150, synthetic_scenes=150, synthetic_seed=0, synthetic_size=64)
scenes = [json.loads(s) for s in ds["scene"]]; caps = [list(c) for c in ds["captions"]]
noun2kind = {}
for k, spec in S.KINDS.items():
    for sg, pl in spec.nouns:
        noun2kind[sg] = k; noun2kind[pl] = k
nouns = sorted(noun2kind, key=len, reverse=True)
ground2bg = {w: bg for bg, (_, words) in S.BACKGROUNDS.items() for w in words}
numw = {v: k for k, v in S.NUMBER_WORDS.items()}
def parse(c):
    t = c.lower().rstrip(".")
    mentions = []
    pat = re.compile(r"(?:\b(a row of)\s+)?(?:\b(a|an|one|two|three|four|five|\d|a few|several|many|the)\s+)?(?:\b(" + "|".join(S.COLOURS) + r")\s+)?\b(" + "|".join(map(re.escape, nouns)) + r")\b")
    for m in pat.finditer(t):
        cnt, col, noun = m.group(2), m.group(3), m.group(4)
        kind = noun2kind[noun]
        plural = any(noun == pl for sg, pl in S.KINDS[kind].nouns) and not any(noun == sg for sg, pl in S.KINDS[kind].nouns)
        rng = None
        if cnt in ("a", "an", "one"): rng = (1, 1)
        elif cnt in numw: rng = (numw[cnt],) * 2
        elif cnt and cnt.isdigit(): rng = (int(cnt),) * 2
        elif cnt in S.VAGUE_COUNTS: rng = S.VAGUE_COUNTS[cnt]
        elif plural: rng = (2, 5)
        elif noun != "aircraft": rng = (1, 1)
        mentions.append((kind, col, rng))
    bg = [bg for w, bg in sorted(ground2bg.items(), key=lambda x: -len(x[0])) if re.search(r"\b" + w + r"\b", t)]
    water = "river" if "river" in t else ("coast" if ("sea" in t or "coast" in t) else None)
    return mentions, (bg[0] if bg else None), water
def consistent(p, s):
    mentions, bg, water = p
    if bg and s["background"] != bg: return False
    if water and (s["water"] is None or s["water"]["type"] != water): return False
    for kind, col, rng in mentions:
        if not any(g["kind"] == kind and (col is None or g["colour"] == col) and (rng is None or rng[0] <= g["count"] <= rng[1]) for g in s["groups"]):
            return False
    return True
texts = [(c, i) for i, cs in enumerate(caps) for c in cs]
cons = [[j for j, s in enumerate(scenes) if consistent(parse(c), s)] for c, i in texts]
miss = sum(i not in cj for (c, i), cj in zip(texts, cons))
print(f"{split}: {len(texts)} captions, parse says own scene inconsistent for {miss}")
sizes = [len(cj) for cj in cons]
print("consistent-scene count per caption: mean %.2f, share unique %.3f, median %d" % (sum(sizes)/len(sizes), sum(x == 1 for x in sizes)/len(sizes), sorted(sizes)[len(sizes)//2]))
dup = Counter(c.lower().rstrip(".") for c, _ in texts); print("exact duplicate captions across list:", sum(v for v in dup.values() if v > 1))
def t2i(K):
    return 100 * sum(min(1.0, K / max(1, len(cj))) if i in cj else 0 for (c, i), cj in zip(texts, cons)) / len(texts)
# i2t: per image, consistent captions M (own 5 among them), P(at least one own in top K) with random order
from math import comb
def i2t(K):
    tot = 0
    for j in range(len(scenes)):
        M = sum(j in cj for cj in cons); own = sum(i == j and j in cj for (c, i), cj in zip(texts, cons))
        if own == 0: continue
        if K >= M: tot += 1; continue
        tot += 1 - comb(M - own, K) / comb(M, K)
    return 100 * tot / len(scenes)
r = {f"t2i_R@{k}": round(t2i(k), 1) for k in (1, 5, 10)} | {f"i2t_R@{k}": round(i2t(k), 1) for k in (1, 5, 10)}
r["mR"] = round(sum(r.values()) / 6, 1); print("oracle (relations ignored):", r)
