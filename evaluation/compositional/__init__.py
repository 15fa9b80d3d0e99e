"""The compositional benchmark: captions edited by one rule (count, colour, relation, ...), scored as pairs.

- `rules`: the edit rules; `generation`: items from benchmark captions; `blind`: the blind check that
  certifies which edit types a text-only model cannot solve; `evaluation`: scoring a model on the items;
  `synthetic_pairs`: the same contrast on rendered synthetic scenes.
"""
