"""The optimiser: decay groups and the warm-up + decay schedule over steps or wall time."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch.nn as nn

from genarena.lit.optim import lr_lambda, param_groups, time_budget_fraction


def test_no_weight_decay_on_norms_biases_and_embeddings():
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.LayerNorm(8))
    decay, no_decay = param_groups(model, 0.05)
    assert [tuple(p.shape) for p in decay["params"]] == [(8, 8)]
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0


def test_warmup_then_cosine_to_min_ratio():
    f = lambda s, t=0.0: lr_lambda(s, 10, 110, "cosine", 0.1, t)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    # a time budget half spent decays as far as half the steps would
    assert f(10, 0.5) == pytest.approx(f(60)) and f(10, 1.0) == pytest.approx(0.1)
    assert lr_lambda(50, 0, 100, "linear", 0.0) == pytest.approx(0.5)


def test_time_budget_fraction_follows_the_trainers_max_time():
    assert time_budget_fraction(None)() == 0.0
    assert time_budget_fraction(L.Trainer(logger=False, enable_checkpointing=False, max_steps=1))() == 0.0
    trainer = L.Trainer(logger=False, enable_checkpointing=False, max_time="00:00:10:00")
    assert time_budget_fraction(trainer)() == pytest.approx(0.0, abs=1e-3)  # not started yet
