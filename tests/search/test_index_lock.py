"""Two writers on one index folder: they queue on the folder's write lock, and neither loses the other's work.

Each writer is a separate `mtgfe-index` process (the lock is an OS file lock, so only processes test it
for real). The first one encodes slowly, so the second one starts while the first holds the lock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mtgfe.search.cli import index_main
from mtgfe.search.gallery_index import MANIFEST_NAME, GalleryIndex
from mtgfe.search.index_storage import WRITE_LOCK_NAME, IndexBusyError, index_write_lock
from tests.helpers.paths import REPO_ROOT
from tests.helpers.retrieval import tiny_model, tiny_processor, write_images

_CHILD = textwrap.dedent(
    """
    import pathlib, sys, time
    sys.path.insert(0, sys.argv[1])
    import mtgfe.search.gallery_index as gallery_index
    from mtgfe.search.cli import index_main

    gate = sys.argv[2]
    if gate:  # a held-up writer: it encodes only once the test opens the gate, holding the lock till then
        real = gallery_index.encode_images
        def gated(*args, **kwargs):
            deadline = time.monotonic() + 120
            while not pathlib.Path(gate).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            return real(*args, **kwargs)
        gallery_index.encode_images = gated
    sys.exit(index_main(sys.argv[3:]))
    """
)
OWNER = ".mtgfe-write.lock.json"


def _writer(args: list[str], log: Path, gate: Path | None = None) -> subprocess.Popen:
    """`mtgfe-index ARGS` in a new process, its stderr in `log`; with `gate`, it waits for that file to exist
    before encoding anything (while holding the lock)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(REPO_ROOT), str(gate or ""), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), text=True)


def _wait_until(condition, process: subprocess.Popen, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen (exit status {process.poll()})")


def _holder_pid(index_dir: Path):
    try:
        return json.loads((index_dir / OWNER).read_text())["pid"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("lock")
    model, processor = tiny_model(), tiny_processor()
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    write_images(root / "base", 3, seed=1, nested=False)
    write_images(root / "new_a", 4, seed=2, nested=False)
    write_images(root / "new_b", 5, seed=3, nested=False)
    return root


def _images_of(index_dir: Path) -> set[str]:
    return {Path(item["image"]).parent.name for item in json.loads((index_dir / MANIFEST_NAME).read_text())["items"]}


@pytest.mark.parametrize("start", ["update", pytest.param("build", marks=pytest.mark.slow)])
def test_two_concurrent_writers_both_land(world, tmp_path, start):
    """An update while another update (or the first build) runs: the second waits, then adds on top."""
    index_dir, gate = tmp_path / "idx", tmp_path / "gate"
    common = ["--model", str(world / "model"), "--output", str(index_dir), "--batch-size", "2", "--quiet"]
    if start == "update":
        assert index_main([*common, "--images", str(world / "base")]) == 0
    first = _writer([*common, "--images", str(world / "new_a")], tmp_path / "a.log", gate=gate)
    assert _wait_until(lambda: _holder_pid(index_dir), first, "the first writer taking the lock") == first.pid
    second = _writer([*common, "--images", str(world / "new_b")], tmp_path / "b.log")
    _wait_until(lambda: "waiting" in (tmp_path / "b.log").read_text(), second, "the second writer queueing")
    gate.touch()  # the first writer now encodes and saves; the second one goes on after it
    assert first.wait(timeout=300) == 0, (tmp_path / "a.log").read_text()
    assert second.wait(timeout=300) == 0, (tmp_path / "b.log").read_text()
    assert f"another writer (PID {first.pid}" in (tmp_path / "b.log").read_text()
    expected = {"new_a", "new_b"} | ({"base"} if start == "update" else set())
    assert _images_of(index_dir) == expected  # nobody's work was lost
    assert len(GalleryIndex.load(index_dir)) == 4 + 5 + (3 if start == "update" else 0)
    assert not (index_dir / OWNER).exists()


def test_a_writer_that_will_not_wait_is_refused_naming_the_holder(world, tmp_path):
    index_dir, gate = tmp_path / "idx", tmp_path / "gate"
    common = ["--model", str(world / "model"), "--output", str(index_dir), "--batch-size", "2", "--quiet"]
    first = _writer([*common, "--images", str(world / "new_a")], tmp_path / "a.log", gate=gate)
    _wait_until(lambda: _holder_pid(index_dir), first, "the first writer taking the lock")
    second = _writer([*common, "--images", str(world / "new_b"), "--lock-timeout", "0"], tmp_path / "b.log")
    assert second.wait(timeout=300) == 2, (tmp_path / "b.log").read_text()
    gate.touch()
    assert first.wait(timeout=300) == 0, (tmp_path / "a.log").read_text()
    err_b = (tmp_path / "b.log").read_text()
    assert f"another writer (PID {first.pid}" in err_b and "Traceback" not in err_b
    assert _images_of(index_dir) == {"new_a"}


def test_the_lock_is_exclusive_released_and_bounded(tmp_path):
    messages = []
    with index_write_lock(tmp_path / "idx"):
        assert (tmp_path / "idx" / WRITE_LOCK_NAME).exists()
        with pytest.raises(IndexBusyError, match=rf"another writer \(PID {os.getpid()} .* after 0\.2 s"):
            with index_write_lock(tmp_path / "idx", timeout=0.2, on_wait=messages.append):
                pass
    assert messages and f"PID {os.getpid()}" in messages[0]
    with index_write_lock(tmp_path / "idx", timeout=0):  # released: taken again at once
        pass


def test_a_reader_between_a_writers_last_two_writes_sees_the_version_it_opened(world, tmp_path):
    """Readers take no lock. The moment that matters: an update has replaced embeddings.npy (more rows) and
    written its new shard, but not yet its manifest. A search then must see the old version, whole."""
    model, processor = tiny_model(), tiny_processor()
    index_dir = tmp_path / "idx"
    GalleryIndex.build(model, processor, world / "base", output_dir=index_dir, progress=False)
    old_manifest = (index_dir / MANIFEST_NAME).read_text()
    before = GalleryIndex.load(index_dir, model=model, processor=processor).search(["a field"], k=3, top_k=3)
    with index_write_lock(index_dir):
        index = GalleryIndex.load(index_dir, model=model, processor=processor)
        assert index.add(world / "new_a", progress=False) == 4
        index.save(index_dir)
    (index_dir / MANIFEST_NAME).write_text(old_manifest)  # as if the writer had not reached its manifest yet
    reader = GalleryIndex.load(index_dir, model=model, processor=processor, verify="full")
    assert len(reader) == 3 and reader.image_embeds.shape[0] == 3
    assert reader.search(["a field"], k=3, top_k=3) == before


# ------------------------------------------------------------------------------------------------ load test
_READER = textwrap.dedent(
    """
    import json, pathlib, sys, time
    sys.path.insert(0, sys.argv[1])
    from mtgfe.search.cli import load_model_and_processor
    from mtgfe.search.gallery_index import GalleryIndex

    index_dir, model_dir, stop, out = sys.argv[2:6]
    model, processor = load_model_and_processor(model_dir)
    records, errors, deadline = [], [], time.monotonic() + 240
    while not pathlib.Path(stop).exists() and time.monotonic() < deadline:
        start = time.perf_counter()
        try:
            index = GalleryIndex.load(index_dir, model=model, processor=processor)
            hits = index.search(["a green field"], k=3, top_k=3)[0]
            known = {item["image"] for item in index.items}
            consistent = all(hit["image"] in known for hit in hits)
            records.append({"version": len(index), "seconds": time.perf_counter() - start, "consistent": consistent})
        except Exception as error:  # noqa: BLE001 - every failure is a finding, reported to the test
            errors.append(f"{type(error).__name__}: {error}")
    pathlib.Path(out).write_text(json.dumps({"records": records, "errors": errors}))
    """
)


@pytest.mark.slow
def test_readers_keep_searching_while_one_writer_updates_and_another_waits(world, tmp_path):
    """Load test, bounded (3 reader processes, 2 writers, at most a few minutes): every search succeeds,
    sees one whole committed version, and no writer's work is lost. Prints queries/s and p95 latency."""
    index_dir, gate, stop = tmp_path / "idx", tmp_path / "gate", tmp_path / "stop"
    common = ["--model", str(world / "model"), "--output", str(index_dir), "--batch-size", "2", "--quiet"]
    assert index_main([*common, "--images", str(world / "base")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    readers = [subprocess.Popen([sys.executable, "-c", _READER, str(REPO_ROOT), str(index_dir), str(world / "model"),
                                 str(stop), str(tmp_path / f"reader{i}.json")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(3)]
    first = _writer([*common, "--images", str(world / "new_a")], tmp_path / "a.log", gate=gate)
    _wait_until(lambda: _holder_pid(index_dir), first, "the first writer taking the lock")
    second = _writer([*common, "--images", str(world / "new_b")], tmp_path / "b.log")
    _wait_until(lambda: "waiting" in (tmp_path / "b.log").read_text(), second, "the second writer queueing")
    gate.touch()
    assert first.wait(timeout=300) == 0 and second.wait(timeout=300) == 0
    time.sleep(3)  # readers see the final version a few times
    stop.touch()
    for reader in readers:
        assert reader.wait(timeout=120) == 0
    reports = [json.loads((tmp_path / f"reader{i}.json").read_text()) for i in range(3)]
    records = [r for report in reports for r in report["records"]]
    assert not [e for report in reports for e in report["errors"]]
    assert records and all(r["consistent"] for r in records)
    assert {r["version"] for r in records} <= {3, 7, 12} and 12 in {r["version"] for r in records}
    assert _images_of(index_dir) == {"base", "new_a", "new_b"}
    seconds = sorted(r["seconds"] for r in records)
    p95 = seconds[min(len(seconds) - 1, int(0.95 * len(seconds)))]
    print(f"\nload test: {len(records)} load+search cycles by 3 readers, {len(records) / sum(seconds) * 3:.1f} "
          f"cycles/s in total, p95 {p95 * 1000:.0f} ms; versions seen {sorted({r['version'] for r in records})}")


def test_a_failed_first_build_leaves_no_folder_behind(world, tmp_path, capsys):
    empty = tmp_path / "no_images"
    empty.mkdir()
    output = tmp_path / "new" / "idx"
    assert index_main(["--model", str(world / "model"), "--images", str(empty), "--output", str(output), "--quiet"]) == 2
    assert "no_images" in capsys.readouterr().err
    assert not output.exists() and not output.parent.exists()  # both folders were created by this run
    # A folder that existed before the run is kept, with what it held.
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    assert index_main(["--model", str(world / "model"), "--images", str(empty), "--output", str(kept), "--quiet"]) == 2
    assert (kept / "notes.txt").read_text() == "mine"
    existing_empty = tmp_path / "existing_empty"
    existing_empty.mkdir()
    assert index_main(["--model", str(world / "model"), "--images", str(empty), "--output", str(existing_empty),
                       "--quiet"]) == 2
    assert existing_empty.is_dir()
    capsys.readouterr()


def test_a_created_folder_whose_lock_another_writer_holds_is_left_alone(tmp_path):
    from mtgfe.search.index_storage import remove_created_folder

    folder = tmp_path / "idx"
    with index_write_lock(folder):
        pass
    from filelock import FileLock

    other = FileLock(str(folder / WRITE_LOCK_NAME))  # another writer, queued behind the failed one
    other.acquire(timeout=0)
    try:
        assert remove_created_folder(folder, [folder]) is False
        assert (folder / WRITE_LOCK_NAME).exists()
    finally:
        other.release()
    (folder / "shard_0.safetensors").write_bytes(b"x")  # something this helper cannot know it created
    assert remove_created_folder(folder, [folder]) is False and folder.is_dir()
    (folder / "shard_0.safetensors").unlink()
    assert remove_created_folder(folder, [folder]) is True and not folder.exists()
