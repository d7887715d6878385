"""Shared fixtures. Every config comes from the shipped ``conf/`` (composed as the commands compose it); tests
override only runtime knobs: model size (tiny models), sampling steps, budgets, and private runs/cache dirs."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from genarena.config import compose, to_dict
from genarena.generators import GENERATORS, tokenizer_for

os.environ.setdefault("WANDB_MODE", "disabled")
torch.set_num_threads(min(2, torch.get_num_threads()))

# size knobs: tiny models so that every test runs in seconds
TINY_TOKENIZER = {
    "vq": ["tokenizer.ch=8", "tokenizer.z_channels=8", "tokenizer.vocab_size=32"],
    "msvq": ["tokenizer.ch=8", "tokenizer.z_channels=8", "tokenizer.vocab_size=32", "tokenizer.patch_nums=[1,2,4,8]"],
    "kl": ["tokenizer.ch=8"],
    "mskl": ["tokenizer.ch=8", "tokenizer.patch_nums=[1,2,4,8]", "tokenizer.share_quant_resi=2"],
}
TINY_GENERATOR = ["generator.depth=1", "generator.width=32", "generator.heads=2"]
TINY_PARADIGM = {"mar": ["generator.buffer_size=4", "generator.diffusion_depth=2"],
                 "var_diffusion": ["generator.diffusion_depth=2"]}
FAST_SAMPLING = {"mar": ["generator.sampling.steps=4", "generator.sampling.diffusion_steps=10"],
                 "var_diffusion": ["generator.sampling.diffusion_steps=10"]}


def compose_cfg(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with overrides, as the commands do."""
    return compose(config_name, list(overrides or []))


def tiny_tokenizer_overrides(kind: str) -> list[str]:
    return [f"tokenizer={kind}", *TINY_TOKENIZER[kind]]


def tiny_generator_overrides(name: str) -> list[str]:
    return [f"generator={name}", *TINY_GENERATOR, *TINY_PARADIGM.get(name, []), *FAST_SAMPLING.get(name, [])]


TOKENIZER_CFGS = {kind: to_dict(compose_cfg(tiny_tokenizer_overrides(kind)).tokenizer) for kind in TINY_TOKENIZER}
VQ_CFG, MSVQ_CFG, KL_CFG = TOKENIZER_CFGS["vq"], TOKENIZER_CFGS["msvq"], TOKENIZER_CFGS["kl"]
GENERATOR_CFGS = {name: to_dict(compose_cfg(tiny_generator_overrides(name)).generator) for name in GENERATORS}
SAMPLING = {name: cfg["sampling"] for name, cfg in GENERATOR_CFGS.items()}
TOKENIZER_OF = {name: tokenizer_for(name) for name in GENERATORS}


def _all_loggers() -> list[logging.Logger]:
    named = [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    return [logging.getLogger(), *named]


@pytest.fixture(autouse=True)
def _drop_handlers_added_by_the_test():
    """In-process Hydra apps install log handlers on the test's captured stdout, which pytest closes after the
    test; later records would then fail with 'I/O operation on closed file'. Remove what a test added."""
    before = {id(lg): set(lg.handlers) for lg in _all_loggers()}
    yield
    for lg in _all_loggers():
        for handler in [h for h in lg.handlers if h not in before.get(id(lg), set())]:
            lg.removeHandler(handler)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """Run in a fresh directory with private runs/ and cache dirs."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENARENA_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("GENARENA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def cli(*args: str) -> list[str]:
    """argv for a console script run with this interpreter."""
    return [sys.executable, "-m", *args]


def tiny_tokenizer(kind: str, seed: int = 0):
    from genarena.tokenizers import build_tokenizer

    torch.manual_seed(seed)
    return build_tokenizer(TOKENIZER_CFGS[kind], image_channels=1, resolution=32).eval()


def tiny_generator(name: str, num_classes: int = 10, seed: int = 0, **over):
    from genarena.generators import build_generator

    tok = tiny_tokenizer(TOKENIZER_OF[name], seed)
    torch.manual_seed(seed)
    return build_generator({**GENERATOR_CFGS[name], **over}, tok, num_classes), tok


def token_batch(tok, n: int = 32, seed: int = 0):
    """Tokens of ``n`` smooth random images, and labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(n, 1, 8, 8, generator=g), size=32, mode="bilinear") * 2 - 1
    return tok.encode(x), torch.randint(0, 10, (n,), generator=g)
