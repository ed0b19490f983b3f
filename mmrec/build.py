"""The one builder: a composed Hydra config -> the datamodule and the LightningModule.

Every part a researcher swaps is a Hydra ``_target_`` instantiated here with its data-dependent
sizes: dataset loader, negative sampler, one featurizer and encoder per modality
(``conf/encoder/<modality>``), fusion, item and user towers, loss terms, optimiser, evaluator. The
wiring (what feeds what) is this file; a class of your own plugs in by naming it in the config,
e.g. ``fusion._target_=my_pkg.MyFusion``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mmrec.checkpoint import load_weights
from mmrec.data.datamodule import RecDataModule
from mmrec.losses.objective import Objective
from mmrec.models.adaptors import Whitened
from mmrec.models.two_tower import TwoTowerModel
from mmrec.training.cache import CatalogueEngine, FrozenFeatures
from mmrec.training.module import RecModule

log = logging.getLogger("mmrec")
CONFIG_ONLY_DATA_KEYS = ("root", "max_image_pixels")  # values other keys interpolate; not datamodule arguments


def make(config, where: str, **kwargs):
    """``hydra.utils.instantiate`` whose errors name the config key: a ValueError/OSError raised by the
    target comes out as itself (not wrapped in Hydra's InstantiationException), prefixed by ``where``."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, (ValueError, OSError)):
            raise type(cause)(f"{where}: {cause}") from err
        if isinstance(cause, TypeError):  # a wrong or missing option
            raise ValueError(f"{where}: {cause}") from err
        raise


def encoder_configs(cfg: DictConfig) -> dict[str, dict]:
    """The enabled modalities' resolved configs (``encoder/<m>=none`` sets ``_target_: null``)."""
    out = {}
    for modality, node in sorted((cfg.get("encoder") or {}).items()):
        config = OmegaConf.to_container(node, resolve=True) if node is not None else None
        if config and config.get("_target_"):
            if "featurizer" not in config:
                raise ValueError(
                    f"encoder.{modality}: no 'featurizer' node (a modality needs a featurizer _target_ and "
                    "an encoder _target_)"
                )
            out[modality] = config
    return out


def check_config(cfg: DictConfig) -> None:
    """Catch wrongly typed values at config time, with the key and what was expected."""
    expected = {
        "model.dim": int,
        "model.dropout": float,
        "model.modality_dropout": float,
        "model.id_dropout": float,
        "model.temperature": float,
        "seed": int,
    }
    for key, kind in expected.items():
        value = OmegaConf.select(cfg, key)
        ok = (
            isinstance(value, int) and not isinstance(value, bool)
            if kind is int
            else isinstance(value, (int, float)) and not isinstance(value, bool)
        )
        if not ok:
            raise ValueError(f"{key}={value!r}: expected {'an integer' if kind is int else 'a number'}")
    if cfg.model.dim < 1:
        raise ValueError(f"model.dim={cfg.model.dim}: expected a positive integer")
    untrained = [p for p in cfg.model.get("freeze") or [] if str(p).split(".")[0] != "encoders"]  # encoders: pretrained
    if untrained and not cfg.get("init_from"):
        raise ValueError(
            f"model.freeze={untrained} without init_from would hold randomly initialised parameters fixed: "
            "freezing fine-tunes a trained model, give init_from=RUN_FOLDER (its best checkpoint) or init_from=CKPT"
        )


def trained_modalities(encoders: dict[str, dict]) -> list[str]:
    """The modalities whose encoders train (mode full or lora), sorted; the others are frozen."""
    return sorted(m for m, c in encoders.items() if c.get("mode", "frozen") != "frozen")


def featurizer_factories(encoders: dict[str, dict]) -> dict:
    """Each modality's featurizer as a partial, called with ``catalogue=`` (a dataclass passed to
    ``instantiate`` as a keyword would be converted by Hydra, so it is given afterwards)."""
    return {m: instantiate(c["featurizer"], _partial_=True) for m, c in encoders.items()}


def load_dataset(data: DictConfig):
    """The dataset a ``data`` config names, after its preparation step (e.g. generating the embedded
    data), with its media policy: for the commands that need the items but no split (export, validate)."""
    if data.get("prepare"):
        instantiate(data.prepare)()
    dataset = instantiate(data.dataset)()
    dataset.allow_external_media = bool(data.get("allow_external_media", False))
    return dataset


def build_datamodule(cfg: DictConfig, encoders: dict[str, dict]) -> RecDataModule:
    featurizers = featurizer_factories(encoders)
    live = tuple(trained_modalities(encoders))
    data = OmegaConf.to_container(cfg.data, resolve=True)
    for key in CONFIG_ONLY_DATA_KEYS:
        data.pop(key, None)
    engine = OmegaConf.select(cfg, "catalogue.media_engine")
    media_engine = None if engine is None else make(engine, "catalogue.media_engine")
    return make(data, "data", featurizers=featurizers, live_modalities=live, media_engine=media_engine, _convert_="all")


@dataclass
class DataSizes:
    """The data-dependent sizes a model is built with (from the datamodule, or an export bundle)."""

    num_items: int
    num_users: int
    history_length: int
    encoder_kwargs: dict[str, dict]  # per modality, from its featurizer (e.g. a vocabulary size)

    @classmethod
    def of(cls, dm: RecDataModule) -> DataSizes:
        kwargs = {m: f.encoder_kwargs() for m, f in dm.featurizers.items()}
        return cls(dm.num_items, dm.num_users, dm.history_length, kwargs)


def build_model(cfg: DictConfig, encoders: dict[str, dict], sizes: DataSizes, trained_ids=None) -> TwoTowerModel:
    """Encoders (sized by their featurizers) -> projections -> fusion -> item tower; user tower.
    ``trained_ids`` (I,) bool marks items with training interactions (the others never use an ID)."""
    m, dim = cfg.model, cfg.model.dim
    built = {}
    for modality, config in encoders.items():
        kwargs = {k: v for k, v in config.items() if k != "featurizer"}
        built[modality] = make(kwargs, f"encoder.{modality}", **sizes.encoder_kwargs.get(modality, {}), _convert_="all")
    # bundles exported before the projection was a config group hold no model.projection: the MLP head
    head = m.get("projection") or {"_target_": "mmrec.models.towers.ProjectionHead", "dropout": m.dropout}
    projections = nn.ModuleDict(
        {k: make(head, "model.projection", in_dim=e.output_dim, dim=dim) for k, e in built.items()}
    )
    if m.get("whiten"):
        trained = trained_modalities(encoders)
        if trained:
            raise ValueError(
                f"model.whiten={m.whiten} whitens frozen encoders' vectors with the catalogue's statistics, "
                f"but {trained} train their encoders (their outputs move every step): set their mode to "
                "frozen, or model.whiten=0"
            )
        projections = nn.ModuleDict(
            {k: Whitened(p, built[k].output_dim, float(m.whiten)) for k, p in projections.items()}
        )
    fusion = make(cfg.fusion, "fusion", modalities=tuple(sorted(built)), dim=dim) if built else None
    item_tower = make(
        m.item_tower,
        "model.item_tower",
        projections=projections,
        fusion=fusion,
        dim=dim,
        num_items=sizes.num_items,
        trained_ids=trained_ids,
    )
    user_tower = make(
        m.user_tower, "model.user_tower", dim=dim, history_length=sizes.history_length, num_users=sizes.num_users
    )
    return TwoTowerModel(built, item_tower, user_tower, m.temperature, m.learn_temperature, m.max_logit_scale)


def start_from(model: TwoTowerModel, cfg: DictConfig) -> None:
    """Fine-tuning: the weights of ``init_from`` (a checkpoint of the same catalogue), then the
    parameters under ``model.freeze`` prefixes fixed (UniSRec fine-tunes its adaptor and item IDs
    with its transformer fixed: ``model.freeze=[user_tower]``)."""
    if cfg.get("init_from"):
        missing, ignored = load_weights(model, cfg.init_from)
        log.info(
            "init_from=%s: started from its weights; %d parameter(s) new to this model (%s), %d of its not used (%s)",
            cfg.init_from,
            len(missing),
            ", ".join(missing) or "none",
            len(ignored),
            ", ".join(ignored) or "none",
        )
    named = dict(model.named_parameters())
    for prefix in cfg.model.get("freeze") or []:
        chosen = [n for n in named if n == prefix or n.startswith(f"{prefix}.")]
        if not chosen:
            parts = sorted({".".join(n.split(".")[:2]) for n in named})
            raise ValueError(f"model.freeze: '{prefix}' names no parameter of this model; its parts: {parts}")
        for name in chosen:
            named[name].requires_grad_(False)
        log.info("model.freeze: %d parameter tensor(s) under '%s' kept fixed", len(chosen), prefix)


def build_objective(cfg: DictConfig) -> Objective:
    """Each node under ``loss`` is one term: its ``_target_`` and its ``weight``."""
    terms, weights = {}, {}
    for name, node in (cfg.loss or {}).items():
        config = OmegaConf.to_container(node, resolve=True)
        if not isinstance(config, dict) or "_target_" not in config or "weight" not in config:
            raise ValueError(f"loss.{name}: expected a loss term with '_target_' and 'weight', got {config!r}")
        weights[name] = config.pop("weight")
        terms[name] = make(config, f"loss.{name}")
    return Objective(terms, weights)


def compile_options(cfg: DictConfig) -> dict | None:
    """``torch.compile`` keyword arguments for the trained parts (``model.compile=true``), or None: eager."""
    return OmegaConf.to_container(cfg.model.compile_options) if cfg.model.get("compile") else None


def catalogue_engine(cfg: DictConfig, dm: RecDataModule) -> CatalogueEngine | None:
    """``catalogue.engine`` (e.g. Ray Data encoder actors) given the datamodule's featurizers, or None:
    the frozen encoders run over the catalogue in the training processes."""
    node = OmegaConf.select(cfg, "catalogue.engine")
    return None if node is None else make(node, "catalogue.engine", featurizers=dm.featurizers)


def build(cfg: DictConfig) -> tuple[RecDataModule, RecModule]:
    """The datamodule (prepared and set up) and the LightningModule for a composed config."""
    check_config(cfg)
    objective = build_objective(cfg)
    if cfg.data.get("train_unit") == "sequence":
        if objective.needs_negatives:
            raise ValueError(
                f"data.train_unit=sequence samples no negatives, but loss term(s) {objective.needs_negatives} "
                "score them: set their weight to 0 (the in-batch softmax trains every position)"
            )
        if not OmegaConf.select(cfg, "model.user_tower._target_", default="").endswith("SequentialUserTower"):
            raise ValueError(
                "data.train_unit=sequence trains every history position: it needs model/user_tower=sequential"
            )
    elif cfg.data.num_negatives == 0 and objective.needs_negatives:
        raise ValueError(
            f"data.num_negatives=0 but loss term(s) {objective.needs_negatives} score sampled negatives: "
            "set their weight to 0 (the in-batch softmax needs none) or data.num_negatives >= 1"
        )
    encoders = encoder_configs(cfg)
    trained = trained_modalities(encoders)
    if objective.needs_catalogue and trained:
        raise ValueError(
            f"loss term(s) {objective.needs_catalogue} embed the whole catalogue every step, but encoder(s) {trained} "
            "are trained (mode full/lora): set their mode to frozen, or use loss=default (in-batch softmax)"
        )
    dm = build_datamodule(cfg, encoders)
    dm.prepare_data()
    dm.setup("fit")
    stats = dm.stats()  # before the model: its transient arrays and the model's tables never peak together
    model = build_model(cfg, encoders, DataSizes.of(dm), trained_ids=dm.item_train_counts > 0)
    start_from(model, cfg)
    frozen_configs = {m: c for m, c in encoders.items() if m not in trained}
    features = FrozenFeatures(
        dm.item_dataloader,
        {m: dm.fingerprint(m) for m in frozen_configs},
        frozen_configs,
        Path(cfg.paths.cache_dir) / "embeddings",
        dm.dataset.name,
        catalogue_engine(cfg, dm),
    )
    evaluator = instantiate(cfg.eval.evaluator, _partial_=True, _convert_="all")
    module = RecModule(
        model,
        objective,
        instantiate(cfg.optimizer),
        stats,
        dm.eval_sets(),
        evaluator,
        features,
        encoder_lr_scale=cfg.model.encoder_lr_scale,
        warmup_ratio=cfg.model.warmup_ratio,
        run_config=OmegaConf.to_container(cfg, resolve=True),
        compile_options=compile_options(cfg),
    )
    return dm, module
