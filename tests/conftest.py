"""Shared fixtures: tiny configs, Hydra composition, and a private runs/cache directory per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from genarena.config import config_dir, register_configs

register_configs()
os.environ.setdefault("WANDB_MODE", "disabled")
torch.set_num_threads(min(2, torch.get_num_threads()))

BASE_NET = {"ch": 8, "ch_mult": [1, 2, 2], "num_res_blocks": 1}
VQ_CFG = {"name": "vq", **BASE_NET, "z_channels": 8, "vocab_size": 32, "beta": 0.25, "l2_norm_codes": False,
          "entropy_weight": 0.0, "entropy_temperature": 1.0, "dead_code_threshold": 0.05, "usage_decay": 0.99}
MSVQ_CFG = {**VQ_CFG, "name": "msvq", "entropy_weight": 0.1, "patch_nums": [1, 2, 4, 8], "quant_resi": 0.5,
            "share_quant_resi": 4, "scale_norm": "whiten"}
KL_CFG = {"name": "kl", **BASE_NET, "z_channels": 4, "kl_weight": 1e-4, "scale_factor": None}
TOKENIZER_CFGS = {"vq": VQ_CFG, "msvq": MSVQ_CFG, "kl": KL_CFG}


def compose_cfg(overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/config.yaml`` with overrides, as the CLI would."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides or []))


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


BACKBONE = {"depth": 1, "width": 32, "heads": 2, "mlp_ratio": 4.0, "qk_norm": True, "drop_path": 0.0,
            "dropout": 0.0, "class_dropout": 0.1, "gate_init": 1e-3}
GENERATOR_CFGS = {
    "var": {"name": "var", **BACKBONE},
    "ar": {"name": "ar", **BACKBONE, "pos_embed": "rope2d", "embed_dropout": 0.0},
    "maskgit": {"name": "maskgit", **BACKBONE, "label_smoothing": 0.1},
    "mar": {"name": "mar", **BACKBONE, "order": "random", "encoder_depth": None, "decoder_depth": None,
            "buffer_size": 4, "mask_ratio_min": 0.7, "diffusion_width": 32, "diffusion_depth": 2,
            "diffusion_timesteps": 1000, "diffusion_batch_mul": 4, "noise_schedule": "cosine"},
}
TOKENIZER_OF = {"var": "msvq", "ar": "vq", "maskgit": "vq", "mar": "kl"}
SAMPLING = {
    "var": {"cfg": 1.5, "cfg_schedule": "linear", "temperature": 1.0, "top_k": 0, "top_p": 0.0},
    "ar": {"cfg": 1.5, "cfg_schedule": "constant", "temperature": 1.0, "top_k": 0, "top_p": 0.0},
    "maskgit": {"cfg": 1.5, "cfg_schedule": "linear", "temperature": 1.0, "top_k": 0, "top_p": 0.0, "steps": 8,
                "choice_temperature": 4.5},
    "mar": {"cfg": 1.5, "cfg_schedule": "linear", "temperature": 1.0, "top_k": 0, "top_p": 0.0, "steps": 4,
            "diffusion_steps": 10},
}


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
