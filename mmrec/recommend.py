"""Recommendations and search from a bundle, without HTTP, printed as a table.

python -m mmrec.recommend bundle=DIR history=[i00001,i00042] k=10 explain=true
python -m mmrec.recommend bundle=DIR query="jazz saxophone"
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from mmrec.configs import CONFIG_PATH
from mmrec.serving.bundle import Bundle
from mmrec.serving.recommender import Recommender, RequestError


def table(results, explain: bool = False) -> str:
    lines = [f"{'rank':>4}  {'item':<12} {'score':>8}  title"]
    for rank, r in enumerate(results, start=1):
        lines.append(f"{rank:>4}  {r.item_id:<12} {r.score:>8.4f}  {r.title}")
        if explain and r.explanation:
            parts = ", ".join(f"{m} {v:+.3f}" for m, v in r.explanation["modalities"].items() if v is not None)
            lines.append(f"{'':>6}modalities: {parts}")
            history = ", ".join(f"{h['item_id']} {h['contribution']:+.3f}" for h in r.explanation["history"][:3])
            lines.append(f"{'':>6}history:    {history}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="recommend")
def main(cfg: DictConfig) -> None:
    bundle = Bundle.load(cfg.bundle, trust_config=cfg.trust_config, allowed_targets=tuple(cfg.allowed_targets))
    store = bundle.root / "live" / "store.sqlite"  # a service's adds and deletes, when it has any; else none
    recommender = Recommender(bundle, query_modality=cfg.query_modality, store=store if store.is_file() else ":memory:")
    try:
        if cfg.query:
            print(f"search: {cfg.query}")
            print(table(recommender.search(str(cfg.query), cfg.k)))
        else:
            history = [str(i) for i in cfg.history]
            print(f"recommendations for a history of {len(history)} item(s)")
            print(table(recommender.recommend(history, cfg.k, True, cfg.user_id, cfg.explain), cfg.explain))
    except RequestError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
