"""The presets of ``conf/tokenizer/`` and ``conf/generator/`` as plain dicts (what a converter fills in)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from genarena.config import config_dir
from genarena.errors import ConfigError


def preset(group: str, name: str) -> dict[str, Any]:
    """``conf/<group>/<name>.yaml`` without its Hydra ``defaults`` list."""
    path = config_dir() / group / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{group} preset {path} does not exist")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    cfg.pop("defaults", None)
    return cfg


def tokenizer_preset(name: str) -> dict[str, Any]:
    """``conf/tokenizer/<name>.yaml`` without its Hydra ``defaults`` list."""
    return preset("tokenizer", name)


def generator_preset(name: str) -> dict[str, Any]:
    """``conf/generator/<name>.yaml`` without its Hydra ``defaults`` list."""
    return preset("generator", name)
