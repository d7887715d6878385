"""The official tokenizer presets of ``conf/tokenizer/`` as plain dicts (what a converter fills in)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from genarena.config import config_dir
from genarena.errors import ConfigError


def tokenizer_preset(name: str) -> dict[str, Any]:
    """``conf/tokenizer/<name>.yaml`` without its Hydra ``defaults`` list."""
    path = config_dir() / "tokenizer" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"tokenizer preset {path} does not exist")
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    cfg.pop("defaults", None)
    return cfg
