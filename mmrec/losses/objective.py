"""The training objective: a weighted sum of named loss terms.

A term is any callable ``term(out: TwoTowerOutput) -> scalar Tensor``; the config names each
term with its ``_target_`` and ``weight`` (``conf/loss/default.yaml``). Adding a term is one
function or class plus one YAML line: ``+loss.my_term={_target_: my_pkg.my_term, _partial_: true, weight: 0.1}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from mmrec.models.two_tower import TwoTowerOutput

LossTerm = Callable[[TwoTowerOutput], torch.Tensor]


class Objective:
    """``total = sum_name weights[name] * terms[name](out)``; returns every term by name."""

    def __init__(self, terms: Mapping[str, LossTerm], weights: Mapping[str, float]):
        if set(terms) != set(weights):
            raise ValueError(f"loss: terms {sorted(terms)} and weights {sorted(weights)} must name the same terms")
        bad = {k: w for k, w in weights.items() if not isinstance(w, (int, float)) or w < 0}
        if bad or not any(w > 0 for w in weights.values()):
            raise ValueError(f"loss weights must be numbers >= 0, not all 0; got {dict(weights)}")
        self.terms, self.weights = dict(sorted(terms.items())), dict(weights)

    @property
    def needs_negatives(self) -> list[str]:
        """The terms (weight > 0) that score sampled negatives, so need ``data.num_negatives >= 1``."""
        return [n for n, t in self.terms.items() if self.weights[n] > 0 and getattr(t, "needs_negatives", False)]

    @property
    def needs_catalogue(self) -> list[str]:
        """The terms (weight > 0) that score every item of the catalogue (``TwoTowerOutput.catalogue``)."""
        return [n for n, t in self.terms.items() if self.weights[n] > 0 and getattr(t, "needs_catalogue", False)]

    def __call__(self, out: TwoTowerOutput) -> dict[str, torch.Tensor]:
        """{'loss': the weighted total, name: each term's value} for every term with weight > 0."""
        values = {name: term(out) for name, term in self.terms.items() if self.weights[name] > 0}
        total = sum(self.weights[name] * value for name, value in values.items())
        return {"loss": total, **values}
