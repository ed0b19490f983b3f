"""Throughput of mmrec on the user's own config, side by side with a hand-written reference loop.

    python -m mmrec.benchmark +experiment=fusion_attn                                   # CPU, tiny presets
    python -m mmrec.benchmark encoder/text=base encoder/image=base encoder/audio=base \\
        benchmark.batch_size=128 benchmark.device=cuda                                  # the base presets

Modes (each: samples/s after warm-up with device sync, peak memory, FLOPs per sample from
torch.utils.flop_counter, TFLOP/s and % of a stated peak, and the ratio mmrec / reference):
    e2e      every encoder trains (mode=full)
    frozen   frozen encoders run in every step (no cache); towers and fusion train
    cached   encoder outputs read from a cache; towers and fusion train
    encode   the catalogue encoding pass (forward only)
    rank     full ranking: users x items x dim, top-K, seen items masked
    data     decoded items/s from the configured dataset with N DataLoader workers
The reference is written as a researcher would (eager, autocast, AdamW, no framework) around the
same encoder backbones.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from types import SimpleNamespace

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mmrec.build import DataSizes, build_model, build_objective, compile_options, encoder_configs
from mmrec.configs import CONFIG_PATH
from mmrec.data.batches import TrainBatch
from mmrec.data.csr import CSR, PairSet
from mmrec.data.datamodule import CatalogueStats
from mmrec.data.features import ItemBatch
from mmrec.evaluation.evaluator import FullRankingEvaluator
from mmrec.io import write_text
from mmrec.modalities import modality_of
from mmrec.training.module import RecModule
from mmrec.training.optim import build_optimizer

log = logging.getLogger("mmrec")
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}  # dense bf16, vendor figures


def random_init(encoders: dict[str, dict]) -> dict[str, dict]:
    """Encoder configs built from their architecture alone (nothing downloaded)."""
    out = copy.deepcopy(encoders)
    return {m: modality_of(config, f"encoder.{m}").random_init(config) for m, config in out.items()}


def synthetic_inputs(encoders: dict[str, dict], b: int, device) -> ItemBatch:
    """Inputs of the configured shapes for ``b`` items, every modality present."""
    batch = ItemBatch(index=torch.arange(b, device=device))
    for m, config in encoders.items():
        x, mask = modality_of(config, f"encoder.{m}").example_inputs(config["featurizer"], b)
        batch.inputs[m], batch.input_mask[m] = x.to(device), mask.to(device)
        batch.present[m] = torch.ones(b, dtype=torch.bool, device=device)
    return batch


def timed(fn, steps: int, warmup: int, device) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def flops_of(fn) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


class Reference(nn.Module):
    """The hand-written model: the same encoder backbones, linear projections, a 2-layer fusion
    transformer over the modality tokens, a user-ID tower, in-batch softmax + BCE (anchor_e2e.py)."""

    def __init__(self, encoders: nn.ModuleDict, dim: int, num_users: int):
        super().__init__()
        self.encoders = copy.deepcopy(encoders)
        self.proj = nn.ModuleDict({m: nn.Linear(e.output_dim, dim) for m, e in encoders.items()})
        heads = 8 if dim % 8 == 0 else 4
        self.fusion = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(dim, heads, 4 * dim, batch_first=True, norm_first=True), 2
        )
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.user = nn.Embedding(num_users, dim)
        self.user_mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.logit_scale = nn.Parameter(torch.tensor(2.659))

    def encode(self, items: ItemBatch) -> dict[str, torch.Tensor]:
        return {m: self.encoders[m].encoder(items.inputs[m], items.input_mask[m]) for m in sorted(self.encoders)}

    def loss(self, features: dict[str, torch.Tensor], users: torch.Tensor) -> torch.Tensor:
        tokens = torch.stack([self.proj[m](features[m].to(self.cls.dtype)) for m in sorted(features)], 1)
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], 1)
        item = F.normalize(self.fusion(tokens)[:, 0], dim=-1)
        u = F.normalize(self.user_mlp(self.user(users)), dim=-1)
        scale = self.logit_scale.exp()
        nce = F.cross_entropy(scale * u @ item.T, torch.arange(len(u), device=u.device))
        pos, neg = (u * item).sum(-1) * scale, (u * item.roll(1, 0)).sum(-1) * scale
        labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
        return nce + F.binary_cross_entropy_with_logits(torch.cat([pos, neg]), labels)


def train_batch(items: ItemBatch, b: int, num_users: int, device) -> TrainBatch:
    """B interactions over the B items of ``items``: each user's positive is one item, its negative
    the next one (as the reference's rolled negatives), an empty history (user-ID tower)."""
    return TrainBatch(
        user=torch.randint(0, num_users, (b,), device=device),
        pos=torch.arange(b, device=device),
        neg=torch.arange(b, device=device).roll(1).unsqueeze(1),
        history=torch.zeros(b, 1, dtype=torch.long, device=device),
        history_mask=torch.zeros(b, 1, dtype=torch.bool, device=device),
        items=items,
    )


def mmrec_module(cfg: DictConfig, encoders: dict[str, dict], mode: str, b: int, device) -> RecModule:
    """The LightningModule as training builds it, for a synthetic catalogue of ``b`` items."""
    bench = cfg.benchmark
    configs = {
        m: modality_of(c, f"encoder.{m}").with_mode(dict(c), "full" if mode == "e2e" else "frozen")
        for m, c in encoders.items()
    }
    sizes = DataSizes(
        b,
        bench.num_users,
        1,
        {m: modality_of(c, f"encoder.{m}").example_encoder_kwargs(c["featurizer"]) for m, c in configs.items()},
    )
    model = build_model(cfg, configs, sizes)
    stats = CatalogueStats(
        b,
        bench.num_users,
        torch.ones(b, dtype=torch.long),
        torch.zeros(b, dtype=torch.bool),
        PairSet(torch.zeros(0, dtype=torch.long), b),
    )
    features = SimpleNamespace(modalities=tuple(sorted(configs)) if mode == "cached" else ())
    evaluator = lambda **kw: FullRankingEvaluator(**kw)  # noqa: E731
    module = RecModule(
        model,
        build_objective(cfg),
        hydra.utils.instantiate(cfg.optimizer),
        stats,
        {},
        evaluator,
        features,
        compile_options=compile_options(cfg),
    )
    module._trainer = None
    module.configure_model()  # model.compile=true: the trained encoders compile in the warm-up steps
    return module.to(device)


def optimizer_of(module: RecModule):
    groups = [{"params": [p for p in module.parameters() if p.requires_grad]}]
    return build_optimizer(module.optimizer_factory, groups)


def bench_training(cfg: DictConfig, encoders: dict[str, dict], mode: str, device, amp) -> dict:
    bench, b = cfg.benchmark, cfg.benchmark.batch_size
    items = synthetic_inputs(encoders, b, device)
    module = mmrec_module(cfg, encoders, mode, b, device)
    if mode == "cached":
        with torch.no_grad():
            for m, enc in module.model.encoders.items():
                module.model.frozen.set(
                    m, enc(items.inputs[m], items.input_mask[m], items.present[m]).float(), items.present[m]
                )
        items = ItemBatch(index=items.index)
    batch = train_batch(items, b, bench.num_users, device)
    opt = optimizer_of(module)

    def step():
        with amp:
            loss = module.training_step(batch, 0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        module.model.clamp_()

    module.log = module.log_dict = lambda *a, **k: None  # Lightning logging needs a Trainer; not part of the cost
    return measure(step, b, bench, device)


def bench_reference(cfg: DictConfig, encoders: dict[str, dict], mode: str, device, amp) -> dict:
    bench, b = cfg.benchmark, cfg.benchmark.batch_size
    items = synthetic_inputs(encoders, b, device)
    built = mmrec_module(cfg, encoders, "e2e" if mode == "e2e" else "frozen", b, device).model.encoders
    model = Reference(built, 512 if device.type == "cuda" else cfg.model.dim, bench.num_users).to(device)
    users = torch.randint(0, bench.num_users, (b,), device=device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    with torch.no_grad(), amp:
        cached = {m: f.float() for m, f in model.encode(items).items()}

    def step():
        with amp:
            if mode == "e2e":
                features = model.encode(items)
            elif mode == "frozen":
                with torch.no_grad():
                    features = model.encode(items)
            else:
                features = cached
            loss = model.loss(features, users)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return measure(step, b, bench, device)


def bench_encode(cfg: DictConfig, encoders: dict[str, dict], device, amp, reference: bool) -> dict:
    b = cfg.benchmark.batch_size
    items = synthetic_inputs(encoders, b, device)
    module = mmrec_module(cfg, encoders, "frozen", b, device)
    if reference:

        def step():
            with torch.no_grad(), amp:
                for m, enc in module.model.encoders.items():
                    enc.encoder(items.inputs[m], items.input_mask[m])
    else:

        def step():
            with torch.no_grad(), amp:
                module.model.encode(items.inputs, items.input_mask, items.present)

    return measure(step, b, cfg.benchmark, device)


def bench_rank(cfg: DictConfig, device, reference: bool) -> dict:
    r = cfg.benchmark.rank
    g = torch.Generator().manual_seed(0)
    users = F.normalize(torch.randn(r.users, r.dim, generator=g), dim=1).to(device)
    items = F.normalize(torch.randn(r["items"], r.dim, generator=g), dim=1).to(device)
    seen = CSR.from_groups(
        [torch.randint(0, r["items"], (r.seen_per_user,), generator=g).unique().numpy() for _ in range(r.users)]
    )
    targets = CSR.from_groups([torch.randint(0, r["items"], (1,), generator=g).numpy() for _ in range(r.users)])
    if reference:  # anchor_rank.py: chunked matmul + topk (no masking)

        def step():
            for s in range(0, r.users, 4096):
                torch.topk(users[s : s + 4096] @ items.T, r.k, dim=1)
    else:
        groups = {"all": torch.ones(r["items"], dtype=torch.bool)}
        evaluator = FullRankingEvaluator(groups, torch.ones(r["items"]), metrics=("recall", "ndcg"), ks=(r.k,)).to(
            device
        )

        def step():
            evaluator.reset()
            evaluator.update(users, items, targets, seen, torch.arange(r.users))
            evaluator.compute()

    seconds = timed(step, 1, 1, device)
    return {"seconds": seconds, "samples_per_s": r.users / seconds}


def bench_data(cfg: DictConfig, workers: int, shards: bool) -> dict:
    """Items/s of the featurizers that read media (image, audio) through the DataLoader: decoding the media
    files, or reading the media shards (decoded once, before the timing)."""
    from mmrec.build import build_datamodule

    encoders = encoder_configs(cfg)
    data = OmegaConf.merge(cfg, {"data": {"num_workers": workers, "eval_batch_size": 32, "media_shards": False}})
    dm = build_datamodule(data, encoders)
    dm.prepare_data()
    dm.setup("fit")
    modalities = tuple(m for m, c in encoders.items() if modality_of(c, f"encoder.{m}").reads_media)
    if shards:
        dm.use_media_shards(modalities)
    n = min(cfg.benchmark.data["items"], dm.num_items)
    loader = dm.item_dataloader(modalities)
    start, seen = time.perf_counter(), 0
    for batch in loader:
        seen += len(batch.index)
        if seen >= n:
            break
    seconds = time.perf_counter() - start
    return {"samples_per_s": seen / seconds, "seconds": seconds}


def measure(step, samples: int, bench, device) -> dict:
    flops = flops_of(step)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(step, bench.steps, bench.warmup, device)
    out = {
        "samples_per_s": samples / seconds,
        "step_s": seconds,
        "flops_per_sample": flops / samples,
        "tflops": flops / seconds / 1e12,
    }
    if device.type == "cuda":
        out["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def run(cfg: DictConfig) -> dict:
    bench = cfg.benchmark
    device = torch.device(
        "cuda"
        if bench.device == "auto" and torch.cuda.is_available()
        else ("cpu" if bench.device == "auto" else bench.device)
    )
    bf16 = bench.precision == "bf16" or (bench.precision == "auto" and device.type == "cuda")
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    torch.manual_seed(cfg.seed)
    encoders = encoder_configs(cfg)
    if bench.random_init:
        encoders = random_init(encoders)
    peak = bench.peak_tflops or next(
        (v for k, v in PEAK_TFLOPS.items() if device.type == "cuda" and k in torch.cuda.get_device_name()), None
    )
    results = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "bf16": bf16,
        "batch_size": bench.batch_size,
        "peak_tflops": peak,
        "modes": {},
    }
    for mode in bench.modes:
        log.info("benchmark: %s", mode)
        if mode in ("e2e", "frozen", "cached"):
            mine = bench_training(cfg, encoders, mode, device, amp)
            ref = bench_reference(cfg, encoders, mode, device, amp) if bench.reference else None
        elif mode == "encode":
            mine, ref = (
                bench_encode(cfg, encoders, device, amp, False),
                (bench_encode(cfg, encoders, device, amp, True) if bench.reference else None),
            )
        elif mode == "rank":
            mine, ref = bench_rank(cfg, device, False), (bench_rank(cfg, device, True) if bench.reference else None)
        elif mode == "data":
            for workers in bench.data.workers:  # the media shards against decoding every file
                shards, decoded = bench_data(cfg, workers, True), bench_data(cfg, workers, False)
                results["modes"][f"data, shards vs decoding ({workers} workers)"] = {
                    "mmrec": shards,
                    "reference": decoded,
                    "ratio": shards["samples_per_s"] / decoded["samples_per_s"],
                }
            continue
        else:
            raise ValueError(
                f"benchmark.modes: unknown mode '{mode}'; expected e2e, frozen, cached, encode, rank or data"
            )
        entry = {"mmrec": mine}
        if ref is not None:
            entry["reference"], entry["ratio"] = ref, mine["samples_per_s"] / ref["samples_per_s"]
        results["modes"][mode] = entry
    return results


def table(results: dict) -> str:
    peak = results["peak_tflops"]
    lines = [
        f"device: {results['device']}, torch {results['torch']}, bf16: {results['bf16']}, "
        f"batch {results['batch_size']}",
        "",
    ]
    lines += [
        "| mode | mmrec samples/s | reference samples/s | mmrec / reference | GFLOP/sample | TFLOP/s | % of peak "
        "| peak GB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, entry in results["modes"].items():
        m, ref = entry["mmrec"], entry.get("reference")
        gflop = f"{m['flops_per_sample'] / 1e9:.2f}" if "flops_per_sample" in m else ""
        tflops = f"{m['tflops']:.3f}" if "tflops" in m else ""
        pct = f"{100 * m['tflops'] / peak:.1f}" if peak and "tflops" in m else ""
        ref_s = f"{ref['samples_per_s']:.1f}" if ref else ""
        ratio = f"{entry['ratio']:.2f}" if ref else ""
        mem = f"{m['peak_memory_gb']:.1f}" if "peak_memory_gb" in m else ""
        lines.append(f"| {mode} | {m['samples_per_s']:.1f} | {ref_s} | {ratio} | {gflop} | {tflops} | {pct} | {mem} |")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="benchmark")
def main(cfg: DictConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    results = run(cfg)
    print(table(results))
    write_text(cfg.benchmark.out, json.dumps(results, indent=2))
    print(f"results: {cfg.benchmark.out}")


if __name__ == "__main__":
    main()
