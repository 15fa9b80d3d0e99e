"""Fault injection on the gallery index: kill -9 during `mtgfe-index`, truncated / altered / swapped files.

Every damage must end in one of two ways: the same index as an undamaged one (bit-identical files, equal
tensors), or an error (`FileFormatError`, e.g. `IndexCorruptError`) whose message names the damaged file.
Never a raw `SafetensorError` / `KeyError` / `JSONDecodeError`, never silently different results.
Images: 20 UCM test images from ../shared/data (skipped when the data is absent); a tiny model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from tests.helpers.retrieval import InterruptingProcessor, tiny_model, tiny_processor

from mtgfe.search.cli import index_main
from mtgfe.search.gallery_index import BUILD_STATE_NAME, MANIFEST_NAME, TEXTS_FILE, GalleryIndex, IndexCorruptError
from mtgfe.utils.io import FileFormatError
from tests.helpers.paths import REPO_ROOT

REPO_ROOT_FOR_CHILD = REPO_ROOT
N_IMAGES = 20


@pytest.fixture(scope="module")
def world(tmp_path_factory, data_dir):
    ucm = data_dir / "ucm_captions"
    annotations = json.loads((ucm / "annotations" / "karpathy_json" / "dataset_ucm_modified.json").read_text())
    names = [Path(i["filename"]).stem + ".jpg" for i in annotations["images"] if i["split"] == "test"][:N_IMAGES]
    root = tmp_path_factory.mktemp("faults")
    (root / "images").mkdir()
    for name in names:
        shutil.copy(ucm / "images" / "jpeg_q95" / name, root / "images" / name)
    model, processor = tiny_model(), tiny_processor()
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    GalleryIndex.build(model, processor, root / "images", output_dir=root / "tokens", batch_size=5, shard_size=10,
                       progress=False)
    GalleryIndex.build(model, processor, root / "images", output_dir=root / "lean", batch_size=5, shard_size=10,
                       keep_tokens=False, progress=False)
    GalleryIndex.build(model, processor, ["a runway", "green farmland", "a harbor with boats"], output_dir=root / "texts")
    return model, processor, root


# ------------------------------------------------------------------------------------------------ helpers
def _safetensors_layout(path: Path) -> dict[str, tuple[int, int]]:
    """Absolute byte ranges of each tensor's data in a safetensors file."""
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + length])
    return {k: (8 + length + v["data_offsets"][0], 8 + length + v["data_offsets"][1])
            for k, v in header.items() if k != "__metadata__"}


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def _truncate(path: Path, keep: float | int) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep) if isinstance(keep, float) else keep])


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _fingerprint(index: GalleryIndex):
    tokens = None if index.image_tokens is None else index.image_tokens[torch.arange(len(index))]
    return index.items, index.image_embeds, tokens


def _same(a: GalleryIndex, b: GalleryIndex) -> bool:
    (ia, ea, ta), (ib, eb, tb) = _fingerprint(a), _fingerprint(b)
    return ia == ib and torch.equal(ea, eb) and ((ta is None and tb is None) or torch.equal(ta, tb))


def _load_or_named_error(directory: Path, damaged: str, model, verify: str = "header"):
    """Load; return the index, or check the error is a FileFormatError naming `damaged` and return None."""
    try:
        return GalleryIndex.load(directory, model=model, verify=verify)
    except FileFormatError as error:
        assert damaged in str(error), f"the error does not name {damaged}: {error}"
        return None


# ------------------------------------------------------------------------------------------------ damaged indexes
def _shard(n: int) -> str:
    return f"shard_{n:05d}.safetensors"


DAMAGES = {
    # name: (index folder, damaged file, how, verify mode)
    "manifest truncated": ("tokens", MANIFEST_NAME, lambda p: _truncate(p, 0.5), "header"),
    "manifest empty": ("tokens", MANIFEST_NAME, lambda p: _truncate(p, 0), "header"),
    "manifest without kind": ("tokens", MANIFEST_NAME, lambda p: _edit_json(p, lambda d: d.pop("kind")), "header"),
    "manifest without shards": ("tokens", MANIFEST_NAME, lambda p: _edit_json(p, lambda d: d.pop("shards")), "header"),
    "manifest items not a list": ("tokens", MANIFEST_NAME, lambda p: _edit_json(p, lambda d: d.update(items={})), "header"),
    "manifest count off": ("tokens", MANIFEST_NAME, lambda p: _edit_json(p, lambda d: d.update(count=19)), "header"),
    "manifest shard entry broken": ("tokens", MANIFEST_NAME,
                                    lambda p: _edit_json(p, lambda d: d["shards"][1].pop("file")), "header"),
    "token shard truncated": ("tokens", _shard(1), lambda p: _truncate(p, 0.5), "header"),
    "token shard cut in its header": ("tokens", _shard(0), lambda p: _truncate(p, 20), "header"),
    "token shard 4 bytes": ("tokens", _shard(0), lambda p: _truncate(p, 4), "header"),
    "token shard header byte flipped": ("tokens", _shard(0), lambda p: _flip(p, 30), "header"),
    "token shard embedding byte flipped": (
        "tokens", _shard(1), lambda p: _flip(p, sum(_safetensors_layout(p)["image_embeds"]) // 2), "header"),
    "token shard token byte flipped (full)": (
        "tokens", _shard(0), lambda p: _flip(p, sum(_safetensors_layout(p)["image_tokens"]) // 2), "full"),
    "token shard deleted": ("tokens", _shard(1), lambda p: p.unlink(), "header"),
    "lean shard truncated": ("lean", _shard(0), lambda p: _truncate(p, 0.7), "header"),
    "lean shard embedding byte flipped": (
        "lean", _shard(0), lambda p: _flip(p, sum(_safetensors_layout(p)["image_embeds"]) // 2), "header"),
    # embeddings.npy is memory-mapped and searched: its bytes are checked against the shards' recorded hashes.
    "mapped embeddings byte flipped": ("lean", "embeddings.npy", lambda p: _flip(p, p.stat().st_size - 6), "header"),
    "mapped embeddings truncated": ("tokens", "embeddings.npy", lambda p: _truncate(p, 0.5), "header"),
    "text file truncated": ("texts", TEXTS_FILE, lambda p: _truncate(p, 0.5), "header"),
    "text file byte flipped": ("texts", TEXTS_FILE, lambda p: _flip(p, p.stat().st_size - 3), "header"),
    "text file deleted": ("texts", TEXTS_FILE, lambda p: p.unlink(), "header"),
}


@pytest.mark.parametrize("case", sorted(DAMAGES))
def test_damaged_index_is_refused_with_the_file_named(world, tmp_path, case):
    model, _, root = world
    kind, damaged, damage, verify = DAMAGES[case]
    copy = tmp_path / kind
    shutil.copytree(root / kind, copy)
    damage(copy / damaged)
    result = _load_or_named_error(copy, damaged, model, verify)
    assert result is None, f"{case}: the damaged index loaded without an error"


def test_token_damage_needs_the_full_check_and_otherwise_loads_lazily(world, tmp_path):
    """Documented limit of the default (cheap) check: token bytes are only hashed with verify="full"."""
    model, _, root = world
    copy = tmp_path / "tokens"
    shutil.copytree(root / "tokens", copy)
    path = copy / _shard(0)
    _flip(path, sum(_safetensors_layout(path)["image_tokens"]) // 2)
    assert GalleryIndex.load(copy, model=model, verify="header") is not None
    with pytest.raises(IndexCorruptError, match=_shard(0)):
        GalleryIndex.load(copy, model=model, verify="full")


def test_swapped_shards_are_detected(world, tmp_path):
    model, _, root = world
    copy = tmp_path / "tokens"
    shutil.copytree(root / "tokens", copy)
    (copy / _shard(0)).rename(copy / "tmp")
    (copy / _shard(1)).rename(copy / _shard(0))
    (copy / "tmp").rename(copy / _shard(1))
    assert _load_or_named_error(copy, "shard_0000", model) is None


def test_harmless_edits_load_the_same_index(world, tmp_path):
    """An unknown manifest key (a newer writer) and an index without checksums (an older one) load, equal."""
    model, _, root = world
    reference = GalleryIndex.load(root / "tokens", model=model, verify="full")
    copy = tmp_path / "tokens"
    shutil.copytree(root / "tokens", copy)
    _edit_json(copy / MANIFEST_NAME, lambda d: d.update(future_option=True))
    assert _same(GalleryIndex.load(copy, model=model), reference)

    def drop_checksums(data):
        data["shards"] = [{"file": s["file"], "count": s["count"]} for s in data["shards"]]

    _edit_json(copy / MANIFEST_NAME, drop_checksums)
    assert _same(GalleryIndex.load(copy, model=model), reference)
    assert _same(GalleryIndex.load(copy, model=model, verify="none"), reference)


# ------------------------------------------------------------------------------------------------ interrupted builds


@pytest.fixture()
def interrupted(world, tmp_path):
    model, processor, root = world
    with pytest.raises(KeyboardInterrupt):
        GalleryIndex.build(model, InterruptingProcessor(processor, 3), root / "images", output_dir=tmp_path / "idx",
                           batch_size=5, shard_size=5, progress=False)
    assert len(json.loads((tmp_path / "idx" / BUILD_STATE_NAME).read_text())["shards"]) == 3
    return tmp_path / "idx"


STATE_DAMAGES = {
    "state truncated": (BUILD_STATE_NAME, lambda d: _truncate(d / BUILD_STATE_NAME, 0.5)),
    "state empty": (BUILD_STATE_NAME, lambda d: _truncate(d / BUILD_STATE_NAME, 0)),
    "state without shards": (BUILD_STATE_NAME, lambda d: _edit_json(d / BUILD_STATE_NAME, lambda s: s.pop("shards"))),
    "state shard without items": (BUILD_STATE_NAME,
                                  lambda d: _edit_json(d / BUILD_STATE_NAME, lambda s: s["shards"][0].pop("items"))),
    "committed shard truncated": (_shard(1), lambda d: _truncate(d / _shard(1), 0.5)),
    "committed shard byte flipped": (_shard(0), lambda d: _flip(d / _shard(0), 30)),
    "committed shard deleted": (_shard(2), lambda d: (d / _shard(2)).unlink()),
}


@pytest.mark.parametrize("case", sorted(STATE_DAMAGES))
def test_resuming_a_damaged_build_names_the_file(world, interrupted, case):
    model, processor, root = world
    damaged, damage = STATE_DAMAGES[case]
    damage(interrupted)
    with pytest.raises(FileFormatError, match=damaged.replace(".", r"\.")):
        GalleryIndex.build(model, processor, root / "images", output_dir=interrupted, batch_size=5, shard_size=5,
                           resume=True, progress=False)


def test_an_orphan_shard_from_a_crash_between_shard_and_state_is_rewritten(world, interrupted):
    """kill -9 after a shard's os.replace but before build_state.json: the next write replaces the orphan."""
    model, processor, root = world
    (interrupted / _shard(3)).write_bytes(b"half a shard")
    resumed = GalleryIndex.build(model, processor, root / "images", output_dir=interrupted, batch_size=5,
                                 shard_size=5, resume=True, progress=False)
    reference = GalleryIndex.load(root / "tokens", model=model)
    assert resumed.items == reference.items and torch.equal(resumed.image_embeds, reference.image_embeds)


# ------------------------------------------------------------------------------------------------ captions files
def test_damaged_captions_files_are_named(world, tmp_path, capsys):
    _, _, root = world
    base = ["--model", str(root / "model"), "--images", str(root / "images"), "--output", str(tmp_path / "i"), "--quiet"]
    broken_json = tmp_path / "captions.json"
    broken_json.write_text('{"1.jpg": ["a runway", ')
    assert index_main([*base, "--captions", str(broken_json)]) == 2
    assert "captions.json" in capsys.readouterr().err
    broken_jsonl = tmp_path / "captions.jsonl"
    broken_jsonl.write_text('{"filename": "1.jpg", "caption": "a runway"}\n{"filename": "2.jp\n')
    assert index_main([*base, "--captions", str(broken_jsonl)]) == 2
    assert "captions.jsonl:2" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()  # refused before any work


# ------------------------------------------------------------------------------------------------ kill -9
_CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[1])
    import mtgfe.search.gallery_index as gallery_index
    from mtgfe.search.cli import index_main

    if sys.argv[2] == "slow":  # give the parent time to kill the build between shards
        real = gallery_index.encode_images
        def slow(*args, **kwargs):
            time.sleep(0.4)
            return real(*args, **kwargs)
        gallery_index.encode_images = slow
    sys.exit(index_main(sys.argv[3:]))
    """
)


def _run_index(args: list[str], mode: str = "fast", **popen) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(REPO_ROOT_FOR_CHILD), mode, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.slow
def test_kill_9_during_mtgfe_index_then_resume_gives_bit_identical_files(world, tmp_path):
    _, _, root = world
    common = ["--model", str(root / "model"), "--images", str(root / "images"), "--batch-size", "2",
              "--shard-size", "4", "--quiet"]
    reference = _run_index([*common, "--output", str(tmp_path / "ref")])
    victim = _run_index([*common, "--output", str(tmp_path / "killed")], mode="slow")
    state = tmp_path / "killed" / BUILD_STATE_NAME
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and victim.poll() is None:
        try:
            if len(json.loads(state.read_text())["shards"]) >= 2:
                break
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.05)
    assert victim.poll() is None, f"the build ended before it could be killed: {victim.communicate()}"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert state.is_file() and not (tmp_path / "killed" / MANIFEST_NAME).exists()
    assert index_main([*common, "--output", str(tmp_path / "killed")]) == 2  # no silent restart: asks for --resume
    resumed = _run_index([*common, "--output", str(tmp_path / "killed"), "--resume"])
    assert resumed.wait(timeout=300) == 0, resumed.communicate()[1]
    assert reference.wait(timeout=300) == 0, reference.communicate()[1]
    ref_files = sorted(p.name for p in (tmp_path / "ref").iterdir())
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == ref_files  # no leftovers, no build state
    for name in ref_files:
        if name == MANIFEST_NAME:
            continue
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    manifests = [json.loads((tmp_path / d / MANIFEST_NAME).read_text()) for d in ("ref", "killed")]
    for manifest in manifests:
        manifest.pop("created"), manifest.pop("updated")
    assert manifests[0] == manifests[1]
