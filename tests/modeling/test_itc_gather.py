"""ITC across processes: 2 gloo processes on CPU match 1 process on the same global batch.

The global batch of 8 is split 4 + 4. Image ids repeat inside a process and across the two, so the
cross-process positives are exercised. ITM mines its negatives on each process's local block, so the
1-process reference computes ITM per block (same seed, same local weights) and ITC on the whole batch.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from modeling_mtgfe import MTGFEConfig, MTGFEForPreTraining
from modeling_mtgfe.losses import gather_for_itc, itc_loss, itc_world_size, positive_mask

WORLD = 2
LOCAL = 4
IMAGE_IDS = torch.tensor([0, 1, 2, 0, 2, 5, 6, 7])  # 0 twice on rank 0 and once on rank 1; 2 on both ranks
# float64: the only difference left between the runs is the summation order of batch-4 vs batch-8 kernels
# (~1e-6 absolute on these gradients in float32, ~1e-15 in float64), so a scale error cannot hide.
DTYPE = torch.float64
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_config(**weights) -> MTGFEConfig:
    return MTGFEConfig.from_preset("tiny", vision_config=NO_DROPOUT, text_config=NO_DROPOUT, mlm_weight=0.0,
                                   mvjrc_weight=0.0, **weights)


def global_batch(config) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    batch, seq, size = WORLD * LOCAL, 10, config.image_size
    input_ids = torch.randint(1000, 2000, (batch, seq), generator=g)
    input_ids[:, 0] = config.cls_token_id
    lengths = torch.randint(4, seq, (batch,), generator=g)
    attention_mask = (torch.arange(seq)[None] < lengths[:, None]).long()
    input_ids[torch.arange(batch), lengths - 1] = config.sep_token_id
    return dict(pixel_values=torch.randn(batch, 3, size, size, generator=g, dtype=torch.float64).to(DTYPE),
                input_ids=input_ids.masked_fill(attention_mask == 0, config.pad_token_id),
                attention_mask=attention_mask, image_ids=IMAGE_IDS.clone())


def block(batch: dict, rank: int) -> dict:
    return {k: v[rank * LOCAL:(rank + 1) * LOCAL] for k, v in batch.items()}


def grads(model) -> dict[str, torch.Tensor]:
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}


def _worker(rank: int, store_file: str, state_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=WORLD)
    try:
        results = {}
        rows = 3 + rank  # batches of different sizes are padded for the collective and trimmed after
        image = torch.arange(2 * rows, dtype=DTYPE).view(rows, 2) + 100 * rank
        results["uneven"] = gather_for_itc(image, -image, torch.arange(rows) + 10 * rank)
        results["uneven_no_ids"] = gather_for_itc(image, -image)[2:]
        for name, weights in (("itc", dict(itm_weight=0.0)), ("itc_itm", dict(itm_weight=1.0))):
            model = MTGFEForPreTraining(tiny_config(**weights))
            model.load_state_dict(torch.load(state_path))
            model.to(DTYPE).train()
            ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
            local = block(global_batch(model.config), rank)
            torch.manual_seed(100 + rank)  # the ITM negatives' draw, reproduced by the reference per block
            out = ddp(**local)
            out.loss.backward()  # DDP averages the gradients over the 2 processes
            results[name] = dict(loss_itc=out.loss_itc.detach(), grads=grads(model),
                                 loss_itm=None if out.loss_itm is None else out.loss_itm.detach())
        model.config.itc_gather = False  # switch off: per-process negatives only
        with torch.no_grad():
            results["local_itc"] = model(**local).loss_itc
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def reference(state: dict, weights: dict) -> dict:
    """1 process: ITC on the global batch of 8, plus ITM of each block of 4 (seeded like its rank), averaged."""
    model = MTGFEForPreTraining(tiny_config(**weights))
    model.load_state_dict(state)
    model.to(DTYPE).train()
    batch = global_batch(model.config)
    itc_only = MTGFEForPreTraining(tiny_config(itm_weight=0.0))
    itc_only.load_state_dict(state)
    itc_only.to(DTYPE)
    out = itc_only(**batch)
    out.loss.backward()
    result = dict(loss_itc=out.loss_itc.detach(), grads=grads(itc_only), loss_itm=[], local_itc=[])
    if weights["itm_weight"] > 0:
        for rank in range(WORLD):
            torch.manual_seed(100 + rank)
            part = model(**block(batch, rank))
            (weights["itm_weight"] * part.loss_itm / WORLD).backward()
            result["loss_itm"].append(part.loss_itm.detach())
        result["grads"] = {n: g + grads(model)[n] for n, g in result["grads"].items()}
    else:
        with torch.no_grad():
            result["local_itc"] = [model(**block(batch, rank)).loss_itc for rank in range(WORLD)]
    return result


def max_grad_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def test_two_processes_match_one_process_on_the_global_batch(tmp_path):
    torch.manual_seed(0)
    model = MTGFEForPreTraining(tiny_config())
    with torch.no_grad():
        model.mtgfe.temp.fill_(0.1)  # not the init value, so a wrong scale factor on its gradient shows
    state_path = tmp_path / "state.pt"
    torch.save(model.state_dict(), state_path)
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(state_path), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    state = torch.load(state_path)
    images = [torch.arange(2 * (3 + r), dtype=DTYPE).view(-1, 2) + 100 * r for r in range(WORLD)]
    for r in range(WORLD):
        all_image, all_text, all_ids, offset = ranks[r]["uneven"]
        assert torch.equal(all_image, torch.cat(images)) and torch.equal(all_text, -torch.cat(images))
        assert all_ids.tolist() == [0, 1, 2, 10, 11, 12, 13] and offset == 3 * r
        no_ids, offset = ranks[r]["uneven_no_ids"]
        assert torch.equal(no_ids, torch.arange(7)) and offset == 3 * r  # rows of different processes never match

    for name, weights in (("itc", dict(itm_weight=0.0)), ("itc_itm", dict(itm_weight=1.0))):
        ref = reference(state, weights)
        got = [r[name] for r in ranks]
        # the logged per-process ITC losses average to the global-batch loss (equal batches)
        mean_itc = sum(float(g["loss_itc"]) for g in got) / WORLD
        assert mean_itc == pytest.approx(float(ref["loss_itc"]), abs=1e-9), name
        for r, g in enumerate(got):
            if ref["loss_itm"]:
                assert float(g["loss_itm"]) == pytest.approx(float(ref["loss_itm"][r]), abs=1e-9), name
            assert max_grad_diff(g["grads"], ref["grads"]) < 1e-9, name  # float64; gradients are O(0.1..1)
        worst = max(max_grad_diff(g["grads"], ref["grads"]) for g in got)
        print(f"{name}: |mean ITC - ref| = {abs(mean_itc - float(ref['loss_itc'])):.1e}, max |grad - ref| = {worst:.1e}")
        if name == "itc":  # itc_gather=False: each process's ITC is the one of its own block
            for r in range(WORLD):
                assert float(ranks[r]["local_itc"]) == pytest.approx(float(ref["local_itc"][r]), abs=1e-6)
            assert float(ref["loss_itc"]) != pytest.approx(float(ref["local_itc"][0]), abs=1e-3)


def test_identity_without_a_process_group(tiny_config):
    assert not dist.is_initialized() and itc_world_size() == 1
    image, text = torch.randn(5, 4), torch.randn(5, 4)
    ids = torch.tensor([3, 1, 3, 2, 0])
    all_image, all_text, all_ids, offset = gather_for_itc(image, text, ids)
    assert all_image is image and all_text is text and all_ids is ids and offset == 0
    assert torch.equal(gather_for_itc(image, text)[2], torch.arange(5))
    # the rectangular (local-loss) form of itc_loss reduces to the square one on a single batch
    sim, pos = image @ text.t() / 0.07, positive_mask(ids)
    assert torch.allclose(itc_loss(sim, pos, sim.t(), pos.t()), itc_loss(sim, pos))

    # a single process with itc_gather on or off gives the same loss and gradients bit for bit
    batch = global_batch(tiny_config)
    results = []
    for gather in (True, False):
        torch.manual_seed(0)
        model = MTGFEForPreTraining(MTGFEConfig.from_preset("tiny", itc_gather=gather, mvjrc_weight=0.0))
        torch.manual_seed(1)
        out = model(**batch)
        out.loss.backward()
        results.append((out.loss.detach(), grads(model)))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(results[0][1][n], results[1][1][n]) for n in results[0][1])


def test_itc_gather_must_be_a_bool():
    with pytest.raises(ValueError, match="itc_gather"):
        MTGFEConfig.from_preset("tiny", itc_gather="yes")
