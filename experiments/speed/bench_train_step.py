"""Training-step cost of MTGFE presets: forward+backward time and peak memory per objective.

Measures, side by side in one process and on the same random batch, the full objective
(ITC + ITM + MLM + MVJRC) against ablations (ITM+ITC only, ...), so ratios are comparable.
Prints a Markdown table. Random weights: cost does not depend on the values.

    python experiments/speed/bench_train_step.py --preset small --batch-size 8
    python experiments/speed/bench_train_step.py --preset tiny --repeats 2        # smoke run
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: see experiments/speed/README.md

import argparse  # noqa: E402
import gc  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from modeling_mtgfe import MTGFEConfig, MTGFEForPreTraining

OBJECTIVES = {
    "full (ITC+ITM+MLM+MVJRC)": dict(itc_weight=1.0, itm_weight=1.0, mlm_weight=1.0, mvjrc_weight=1.0),
    "ITC+ITM+MLM": dict(itc_weight=1.0, itm_weight=1.0, mlm_weight=1.0, mvjrc_weight=0.0),
    "ITC+ITM": dict(itc_weight=1.0, itm_weight=1.0, mlm_weight=0.0, mvjrc_weight=0.0),
    "ITC only (dual encoder)": dict(itc_weight=1.0, itm_weight=0.0, mlm_weight=0.0, mvjrc_weight=0.0),
}


def make_batch(config: MTGFEConfig, batch_size: int, seq_len: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    size = config.image_size
    input_ids = torch.randint(1000, 5000, (batch_size, seq_len), generator=g)
    input_ids[:, 0] = config.cls_token_id
    input_ids[:, -1] = config.sep_token_id
    return dict(
        pixel_values=torch.randn(batch_size, 3, size, size, generator=g),
        pixel_values_view2=torch.randn(batch_size, 3, size, size, generator=g),
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        image_ids=torch.arange(batch_size) // 2,  # two captions per image, like real batches
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_step(model, batch, repeats: int, bf16: bool) -> tuple[float, float]:
    """Median seconds of forward+backward and the traced peak of autograd-saved memory (MB)."""
    times, peaks = [], []
    for index in range(repeats + 1):  # the first run warms up allocators and kernels
        model.zero_grad(set_to_none=True)
        gc.collect()
        saved = [0]

        def pack(tensor):
            saved[0] += tensor.numel() * tensor.element_size()
            return tensor

        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(**batch).loss
        loss.backward()
        elapsed = time.perf_counter() - start
        if index:
            times.append(elapsed)
            peaks.append(saved[0] / 2**20)
    return statistics.median(times), max(peaks)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "base"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast on the CPU")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    rows = []
    for name, weights in OBJECTIVES.items():
        config = MTGFEConfig.from_preset(args.preset, **weights)
        model = MTGFEForPreTraining(config).train()
        batch = make_batch(config, args.batch_size, args.seq_len)
        if weights["mvjrc_weight"] == 0:
            batch.pop("pixel_values_view2")
        seconds, saved_mb = time_step(model, batch, args.repeats, args.bf16)
        rows.append((name, seconds, saved_mb))
        del model

    params = sum(p.numel() for p in MTGFEForPreTraining(MTGFEConfig.from_preset(args.preset)).parameters())
    print(f"# MTGFE training step, preset `{args.preset}` ({params / 1e6:.1f} M parameters)")
    print(
        f"batch {args.batch_size} pairs, {args.seq_len} tokens, image {MTGFEConfig.from_preset(args.preset).image_size} px, "
        f"{'bf16 autocast' if args.bf16 else 'fp32'}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}; median of {args.repeats}\n"
    )
    print("| objective | fwd+bwd s/step | pairs/s | autograd-saved MB | time vs ITC+ITM | memory vs ITC+ITM |")
    print("|---|---|---|---|---|---|")
    reference = next(r for r in rows if r[0] == "ITC+ITM")
    for name, seconds, saved_mb in rows:
        print(
            f"| {name} | {seconds:.3f} | {args.batch_size / seconds:.1f} | {saved_mb:.0f} | "
            f"{seconds / reference[1]:.2f}x | {saved_mb / reference[2]:.2f}x |"
        )
    print(f"\nprocess peak RSS: {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
