"""The LightningModule: two-tower training with frozen-encoder caching and full-ranking evaluation.

Everything it needs is given at construction (by ``mmrec.build``): the model, the objective, the
catalogue statistics, the evaluation users and the frozen-feature cache. It never reaches into
the datamodule, so ``trainer.fit/validate/test(module, datamodule=dm)`` work with any Trainer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.loggers import WandbLogger
from torch import nn

from mmrec.checkpoint import rng_states, set_rng_states
from mmrec.data.batches import EvalSet, TrainBatch
from mmrec.data.csr import PairSet
from mmrec.data.datamodule import CatalogueStats
from mmrec.data.features import ItemBatch
from mmrec.data.sequences import SequenceBatch
from mmrec.distributed import rank_and_world
from mmrec.evaluation.evaluator import FullRankingEvaluator
from mmrec.evaluation.groups import EvalResult, activity_quintiles, item_groups
from mmrec.losses.objective import Objective
from mmrec.models.two_tower import TwoTowerModel, TwoTowerOutput
from mmrec.training.cache import FrozenFeatures, ProblemReport
from mmrec.training.optim import build_optimizer, param_groups, warmup_cosine
from mmrec.training.sparse import SparseTables, sparse_parameters

log = logging.getLogger(__name__)
PARTS = ("valid", "test")


class EmptyItemsError(ValueError):
    """Items with no usable modality while the model can only embed content."""


class RecModule(L.LightningModule):
    """Trains a TwoTowerModel with an Objective; validation and test rank the whole catalogue.

    ``optimizer`` is a partial ``torch.optim`` constructor taking (param_groups); ``evaluator``
    builds a FullRankingEvaluator from ``(groups, popularity)``; ``eval_sets`` maps 'valid'/'test'
    to the users to rank; ``features`` caches the outputs of the frozen encoders and reads the catalogue;
    ``compile_options``: ``torch.compile`` keyword arguments for the trained parts (None: eager).
    """

    def __init__(
        self,
        model: TwoTowerModel,
        objective: Objective,
        optimizer: Callable,
        stats: CatalogueStats,
        eval_sets: Mapping[str, EvalSet],
        evaluator: Callable[..., FullRankingEvaluator],
        features: FrozenFeatures,
        encoder_lr_scale: float = 0.1,
        warmup_ratio: float = 0.05,
        run_config: Mapping | None = None,
        compile_options: Mapping | None = None,
    ):
        super().__init__()
        self.model, self.objective, self.optimizer_factory = model, objective, optimizer
        self.eval_sets, self.features = eval_sets, features  # read when a part is evaluated
        self.encoder_lr_scale, self.warmup_ratio = encoder_lr_scale, warmup_ratio
        self.run_config = dict(run_config or {})
        self.compile_options = None if compile_options is None else dict(compile_options)
        self.frozen_modalities = features.modalities
        self.problems = ProblemReport()
        self.sparse_tables: SparseTables | None = None
        self._sparse_state: dict | None = None
        counts = stats.item_train_counts.double()
        self.register_buffer("log_q", (counts.clamp(min=1) / counts.sum().clamp(min=1)).log().float(), persistent=False)
        self.register_buffer("popularity", counts.float(), persistent=False)
        self.register_buffer("train_keys", stats.train_pairs.keys, persistent=False)
        self.train_stride = stats.train_pairs.stride
        self.item_ids = stats.item_ids
        groups = item_groups(stats.cold_items, stats.item_train_counts)
        user_groups = activity_quintiles(stats.user_train_counts)
        self.evaluators = nn.ModuleDict(
            {part: evaluator(groups=groups, popularity=counts, user_groups=user_groups) for part in PARTS}
        )
        self._cached = False

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the resolved run config (for mmrec.evaluate), the W&B run id and every RNG state
        (so that a resumed run continues the same random streams)."""
        checkpoint["mmrec_config"] = self.run_config
        checkpoint["mmrec_rng"] = rng_states()
        if self.sparse_tables is not None:  # the ID tables' optimiser, beside Lightning's
            checkpoint["mmrec_sparse_optimizer"] = self.sparse_tables.state_dict()
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                checkpoint["mmrec_wandb_id"] = logger.version
                checkpoint["mmrec_wandb_group"] = str(logger.experiment.group or "")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "mmrec_rng" in checkpoint and self._trainer is not None and self.trainer.state.fn == "fit":
            set_rng_states(checkpoint["mmrec_rng"])
        self._sparse_state = checkpoint.get("mmrec_sparse_optimizer")  # loaded once configure_optimizers built it

    def configure_model(self) -> None:
        """Compile what trains, in place (``nn.Module.compile``: the state dict keeps its keys, so
        checkpoints and bundles do not change): the trained encoders, where the FLOPs are, and the
        item and user towers, which are all there is on cached features (where the step is short
        and ``compile_options={mode: reduce-overhead}`` replays it as CUDA graphs). Frozen encoders
        run once, for the cache, and stay eager. Text batches come in a few lengths
        (``length_bucket``), so the compiled graphs are not rebuilt every batch."""
        if self.compile_options is None:
            return
        parts = [self.model.encoders[m] for m in self.live_modalities]
        for part in [*parts, self.model.item_tower, self.model.user_tower]:
            if getattr(part, "_compiled_call_impl", None) is None:
                part.compile(**self.compile_options)

    @property
    def live_modalities(self) -> tuple[str, ...]:
        return tuple(m for m in self.model.modalities if m not in self.frozen_modalities)

    @property
    def known_interactions(self) -> PairSet:
        return PairSet(self.train_keys, self.train_stride)

    # -- frozen-encoder cache --------------------------------------------------------------------
    def _ensure_cache(self) -> None:
        """Encode the catalogue with each frozen encoder once (or read it from disk)."""
        if self._cached:
            return
        encoders = {m: self.model.encoders[m] for m in self.frozen_modalities}
        for m, (features, present, problems) in self.features.load(encoders, len(self.popularity), self.device).items():
            self.model.frozen.set(m, features.to(self.device), present.to(self.device))
            self.problems.add(problems)
            log.info("%s: %d of %d items have it", m, int(present.sum()), len(present))
        if self.problems.count:
            log.warning("%d media file(s) could not be decoded; those modalities count as missing", self.problems.count)
        self.fit_whitening()
        self._cached = True

    def fit_whitening(self) -> None:
        """Fit each frozen modality's ``model.whiten`` to the catalogue's vectors, once: a checkpoint
        or ``init_from`` that carries fitted statistics keeps them."""
        for m in self.frozen_modalities:
            whitening = getattr(self.model.item_tower.projections[m], "whitening", None)
            if whitening is None or bool(whitening.fitted):
                continue
            features, present = self.model.frozen.get(m)
            whitening.fit(features[present])
            log.info("%s: whitening fitted to the vectors of %d items", m, int(present.sum()))

    def check_empty_items(self) -> None:
        """Raise before training when some item has no usable modality and the model cannot embed it
        otherwise. Frozen modalities' presence comes from the cache; live ones get one featurizer pass."""
        tower = self.model.item_tower
        if tower.fusion is None or tower.id_embedding is not None or tower.empty is not None:
            return
        present = [self.model.frozen.get(m)[1].cpu() for m in self.frozen_modalities]
        if self.live_modalities:
            live, problems = self.features.presence(self.live_modalities, len(self.popularity))
            self.problems.add(problems)
            present += list(live.values())
        empty = ~torch.stack(present).any(0)
        if bool(empty.any()):
            rows = empty.nonzero().flatten()[:10].tolist()
            named = [self.item_ids[i] for i in rows] if self.item_ids is not None else rows
            files = (
                f" Media that could not be used: {'; '.join(self.problems.problems[:3])}."
                if self.problems.count
                else ""
            )
            raise EmptyItemsError(
                f"{int(empty.sum())} item(s) have no usable modality (all absent or undecodable), e.g. item id(s) "
                f"{named}.{files} Run `python -m mmrec.validate` to list them all. "
                "Either give items an ID embedding (model.item_id=true) or one shared learned vector "
                "(model.empty_items=learned)."
            )

    def on_fit_start(self) -> None:
        self._ensure_cache()
        self.check_empty_items()

    def on_validation_start(self) -> None:
        self._ensure_cache()

    def on_test_start(self) -> None:
        self._ensure_cache()

    # -- shared item path ------------------------------------------------------------------------
    def embed_items(self, items: ItemBatch):
        """Item-tower output for an ItemBatch: live encoders run now, frozen ones come from the cache."""
        self.problems.add(items.problems)
        features = self.model.encode(items.inputs, items.input_mask, items.present, self.live_modalities)
        present = {m: items.present[m] for m in self.live_modalities}
        cached, cached_present = self.model.frozen.gather(self.frozen_modalities, items.index)
        features.update(cached)
        present.update(cached_present)
        return self.model.embed_items(features, present, items.index)

    def embed_catalogue(self) -> torch.Tensor:
        """(I, D) every item from the cached frozen-encoder outputs and the ID tables (training mode)."""
        if self.live_modalities:
            raise ValueError(
                f"loss term(s) {self.objective.needs_catalogue} embed the whole catalogue every step, but "
                f"{list(self.live_modalities)} have trained encoders: use frozen encoders, or the in-batch softmax"
            )
        features, present = self.model.frozen.gather(self.frozen_modalities)
        index = torch.arange(len(self.popularity), device=self.device)
        return self.model.embed_items(features, present, index).embedding

    def training_step(self, batch: TrainBatch | SequenceBatch, batch_idx: int) -> torch.Tensor:
        item_out = self.embed_items(batch.items)
        emb = item_out.embedding  # (M, D)
        if isinstance(batch, SequenceBatch):
            users = self.model.user_tower.forward_all(emb[batch.history], batch.history_mask, batch.user)  # (B, L, D)
            users, pos_local = users.flatten(0, 1), batch.targets.flatten()  # one row per position: (B * L, D)
            neg_local = pos_local.new_zeros(len(pos_local), 0)  # sequence training samples no negatives
            user_ids, valid = batch.user.repeat_interleave(batch.targets.shape[1]), batch.history_mask.flatten()
        else:
            users = self.model.embed_users(emb[batch.history], batch.history_mask, batch.user)  # (B, D)
            pos_local, neg_local, user_ids, valid = batch.pos, batch.neg, batch.user, None
        pos, neg = emb[pos_local], emb[neg_local]  # (B, D), (B, K, D)
        pos_ids = batch.items.index[pos_local]
        out = TwoTowerOutput(
            users=users,
            pos_items=pos,
            neg_items=neg,
            user_ids=user_ids,
            pos_ids=pos_ids,
            neg_ids=batch.items.index[neg_local],
            logit_scale=self.model.logit_scale,
            pos_logits=self.model.score(users, pos),
            neg_logits=self.model.score(users, neg),
            log_q=self.log_q[pos_ids],
            known=self.known_interactions,
            valid=valid,
        )
        if self.objective.needs_catalogue:
            out.catalogue = self.embed_catalogue()
        losses = self.objective(out)
        size = len(batch.user)
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=size)
        self.log_dict(
            {f"train/{name}": value.detach() for name, value in losses.items() if name != "loss"}, batch_size=size
        )
        self.log("train/temperature", 1.0 / self.model.logit_scale.detach().exp(), batch_size=size)
        if item_out.modality_weights is not None:
            weights = item_out.modality_weights.detach().float().mean(0)
            self.log_dict(
                {f"train/weight_{m}": weights[i] for i, m in enumerate(self.model.item_tower.modalities)},
                batch_size=size,
            )
        return losses["loss"]

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.model.clamp_()  # after the optimiser step: the parameter itself stays in range

    # -- evaluation: embed the catalogue in steps, rank users at epoch end ----------------------------
    def _start_eval(self) -> None:
        n, d = len(self.popularity), self.model.item_tower.dim
        self._table = torch.zeros(n, d, device=self.device)
        self._filled = torch.zeros(n, device=self.device)

    def _eval_step(self, batch: ItemBatch) -> None:
        self._table[batch.index] = self.embed_items(batch).embedding.float()
        self._filled[batch.index] = 1.0

    def _finish_eval(self, part: str) -> None:
        table, filled = self._table, self._filled
        del self._table, self._filled
        rank, world = rank_and_world()
        if world > 1:  # each rank embedded a shard (the sampler may repeat items: average them)
            table, filled = table * filled.unsqueeze(1), filled.clone()
            dist.all_reduce(table), dist.all_reduce(filled)
            table = table / filled.clamp(min=1).unsqueeze(1)
        embedded = filled > 0
        candidates = None
        if not bool(embedded.all()):
            limited = (
                self.trainer.fast_dev_run
                or self.trainer.limit_val_batches != 1.0
                or self.trainer.limit_test_batches != 1.0
            )
            if not limited:
                raise RuntimeError(
                    f"{part}: {int((~embedded).sum())} catalogue items were not embedded; the item loader "
                    "must cover the catalogue"
                )
            log.warning(
                "%s: only %d of %d items embedded (limited batches): ranking among those only",
                part,
                int(embedded.sum()),
                len(embedded),
            )
            candidates = embedded
        mine = self.eval_sets[part].select(
            torch.arange(rank, len(self.eval_sets[part]), world)
        )  # every user on one rank
        mine = EvalSet(
            mine.users.to(self.device),
            mine.history.to(self.device),
            mine.history_mask.to(self.device),
            mine.targets.to(self.device),
            mine.seen.to(self.device),
        )
        users = self.model.embed_users(table[mine.history], mine.history_mask, mine.users)
        evaluator = self.evaluators[part]
        evaluator.reset()
        evaluator.update(users, table, mine.targets, mine.seen, mine.users, candidates)
        metrics = {metric_key(part, name): float(value) for name, value in evaluator.compute().items()}
        self.log_dict(metrics, sync_dist=False, rank_zero_only=False)
        self.last_eval = EvalResult(part, table.detach(), users.detach(), mine)

    def on_validation_epoch_start(self) -> None:
        self._start_eval()

    def validation_step(self, batch: ItemBatch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("valid")

    def on_test_epoch_start(self) -> None:
        self._start_eval()

    def test_step(self, batch: ItemBatch, batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")

    # -- optimisation ----------------------------------------------------------------------------
    def configure_optimizers(self):
        """AdamW groups (``mmrec.training.optim``); linear warmup, then cosine decay to zero. Sparse ID
        tables (``model.sparse_ids``) have their own SparseAdam, stepped at the same schedule."""
        base = self.optimizer_factory.keywords.get("lr", 1e-3)
        sparse = sparse_parameters(self.model)
        if sparse:
            if self.trainer.world_size > 1:
                raise ValueError(
                    "model.sparse_ids=true trains in one process only (sparse gradients are not all-reduced "
                    "over NCCL): use dense ID tables under DDP"
                )
            betas = self.optimizer_factory.keywords.get("betas", (0.9, 0.999))
            self.sparse_tables = SparseTables(sparse, base, tuple(betas))
            if self._sparse_state is not None:
                self.sparse_tables.load_state_dict(self._sparse_state)
        groups = param_groups(self.named_parameters(), base, self.encoder_lr_scale, {id(p) for p in sparse})
        optimizer = build_optimizer(self.optimizer_factory, groups)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = warmup_cosine(total, int(self.warmup_ratio * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        self._id_lr = lambda: base * schedule(scheduler.last_epoch)  # the sparse tables follow the schedule
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """The configured optimiser's step (it runs the forward and backward), then the sparse ID
        tables' at the same point of the schedule."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.sparse_tables is not None:
            self.sparse_tables.step(self._id_lr())


def metric_key(part: str, name: str) -> str:
    """Evaluator keys -> logged keys: 'all/recall@20' -> 'test/recall@20', 'cold/ndcg@10' ->
    'test_cold/ndcg@10', 'coverage@20' -> 'test/coverage@20', 'auc' -> 'test/auc'."""
    group, sep, metric = name.partition("/")
    if not sep:
        return f"{part}/{name}"
    return f"{part}/{metric}" if group == "all" else f"{part}_{group}/{metric}"
