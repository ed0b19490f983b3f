"""Multi-GPU on paper: bytes each rank moves per training step, and the throughput they allow.

    python experiments/comms_model.py encoder/text=base encoder/image=base encoder/audio=base \
        model.dim=512 model.user_id=true benchmark.batch_size=128 benchmark.num_users=100000

Builds the configured model as `mmrec.benchmark` does (random init, nothing downloaded) and counts,
per step and rank, for the modes e2e (every encoder trains), frozen (encoders frozen, or LoRA-sized
trainable parts) and cached (encoder outputs from the cache):

- the DDP gradient all-reduce of every trainable parameter (fp32 gradients, ring: 2 (W-1)/W x size);
- the in-batch softmax's all-gather of the positives' item embeddings (fp32, with gradients: an
  all-gather forward and a reduce-scatter backward, (W-1) x B x D x 4 bytes each) and of their ids
  and log-probabilities (12 bytes a row).

The time of a collective is the bytes a rank moves over the bus bandwidth NCCL reaches: inside a
node (W <= --gpus-per-node) the NVLink figure, across nodes the per-GPU network figure. Both are
assumptions, not measurements (defaults: 360 GB/s for an 8-GPU NVSwitch node, 45 GB/s for one
400 Gb/s NIC per GPU). Compute per step is B / (samples/s of one GPU); the defaults are the
hand-written reference loop's H200 figures (measured outside mmrec) (mmrec's own GPU figures are
still to be measured). Two bounds: "no overlap" adds every collective to the step; "overlap" hides
the gradient all-reduce behind compute (DDP's bucketed all-reduce runs during backward), while the
embedding all-gather stays on the critical path (the loss needs it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir

from mmrec.benchmark import mmrec_module, random_init
from mmrec.build import encoder_configs

CONF = Path(__file__).resolve().parent.parent / "conf"
MODES = ("e2e", "frozen", "cached")
REFERENCE_SAMPLES_PER_S = {"e2e": 590.0, "frozen": 1242.0, "cached": 11088.0}  # H200, the hand-written reference loop


def step_bytes(trainable: int, batch: int, dim: int, world: int) -> dict[str, float]:
    """Bytes one rank sends (= receives) per step for each collective at world size ``world``."""
    return {
        "grad_all_reduce": 2 * (world - 1) / world * 4 * trainable,
        "embedding_gather": 2 * (world - 1) * batch * dim * 4,  # all-gather forward + reduce-scatter backward
        "id_gather": (world - 1) * batch * 12,  # item ids (int64) and log q (fp32), no gradient
    }


def modelled(bytes_: dict[str, float], bus_gbs: float, compute_s: float) -> dict[str, float]:
    seconds = {k: v / (bus_gbs * 1e9) for k, v in bytes_.items()}
    gather = seconds["embedding_gather"] + seconds["id_gather"]
    return {
        "comm_s": sum(seconds.values()),
        "no_overlap_s": compute_s + sum(seconds.values()),
        "overlap_s": max(compute_s, seconds["grad_all_reduce"]) + gather,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worlds", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--intra-gbs", type=float, default=360.0, help="NCCL bus bandwidth inside a node, GB/s")
    parser.add_argument("--inter-gbs", type=float, default=45.0, help="NCCL bus bandwidth across nodes, GB/s")
    parser.add_argument(
        "--samples-per-s",
        nargs="+",
        default=[f"{m}={v}" for m, v in REFERENCE_SAMPLES_PER_S.items()],
        help="one GPU's training samples/s per mode, MODE=VALUE",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the benchmark config")
    args = parser.parse_args(argv)
    speed = {k: float(v) for k, v in (item.split("=", 1) for item in args.samples_per_s)}
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="benchmark", overrides=args.overrides, return_hydra_config=True)
    hydra.core.hydra_config.HydraConfig.instance().set_config(cfg)
    encoders = random_init(encoder_configs(cfg))
    b, dim = cfg.benchmark.batch_size, cfg.model.dim
    print(
        f"batch {b} per GPU, model.dim {dim}; bus bandwidth {args.intra_gbs:g} GB/s inside a node of "
        f"{args.gpus_per_node}, {args.inter_gbs:g} GB/s across nodes (assumed)\n"
    )
    print(
        "| mode | trainable params | GPUs | grad all-reduce MB | embedding all-gather MB | comm ms | compute ms "
        "| samples/s, no overlap | samples/s, overlap | scaling efficiency |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode in MODES:
        module = mmrec_module(cfg, encoders, mode, b, "cpu")
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        compute_s = b / speed[mode]
        for world in args.worlds:
            bytes_ = step_bytes(trainable, b, dim, world)
            bus = args.intra_gbs if world <= args.gpus_per_node else args.inter_gbs
            t = modelled(bytes_, bus, compute_s)
            no_overlap, overlap = world * b / t["no_overlap_s"], world * b / t["overlap_s"]
            print(
                f"| {mode} | {trainable / 1e6:.1f} M | {world} | {bytes_['grad_all_reduce'] / 1e6:.1f} | "
                f"{(bytes_['embedding_gather'] + bytes_['id_gather']) / 1e6:.2f} | {1e3 * t['comm_s']:.1f} | "
                f"{1e3 * compute_s:.1f} | {no_overlap:,.0f} | {overlap:,.0f} | "
                f"{no_overlap / (world * speed[mode]):.0%} to {overlap / (world * speed[mode]):.0%} |"
            )
        del module


if __name__ == "__main__":
    main()
