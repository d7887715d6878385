"""Tokenizers: one interface (``Tokenizer``), four kinds (``vq``, ``msvq``, ``kl``, ``mskl``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from genarena.checkpoints import read_checkpoint, sub_state_dict
from genarena.errors import CheckpointError, ConfigError
from genarena.tokenizers.base import KINDS, Tokenizer
from genarena.tokenizers.kl import KLTokenizer
from genarena.tokenizers.mskl import MSKLTokenizer
from genarena.tokenizers.msvq import MSVQTokenizer, MultiScaleResidualQuantizer
from genarena.tokenizers.vq import VQTokenizer

TOKENIZERS: dict[str, type[Tokenizer]] = {"vq": VQTokenizer, "msvq": MSVQTokenizer, "kl": KLTokenizer,
                                          "mskl": MSKLTokenizer}

# config keys that configure training, not the network
TRAINING_KEYS = ("name", "ckpt", "recon_loss", "perceptual", "discriminator")


def build_tokenizer(cfg: Mapping[str, Any], image_channels: int, resolution: int) -> Tokenizer:
    """Build the tokenizer named by ``cfg["name"]`` from its config (a plain dict of ``conf/tokenizer/*.yaml``)."""
    name = cfg["name"]
    if name not in TOKENIZERS:
        raise ConfigError(f"tokenizer.name={name!r} is not known; choose one of {', '.join(TOKENIZERS)}")
    kwargs = {k: v for k, v in cfg.items() if k not in TRAINING_KEYS}
    kwargs.setdefault("net", "genarena")  # configs saved before tokenizer.net existed
    kwargs.setdefault("ldm", None)
    return TOKENIZERS[name](image_channels=image_channels, resolution=resolution, **kwargs)


def load_tokenizer(path: str | Path, *, allow_unsafe: bool = False) -> tuple[Tokenizer, dict[str, Any]]:
    """A frozen tokenizer (eval mode, no grads) from a checkpoint or run directory, plus its hyperparameters
    (read with ``weights_only=True``; ``allow_unsafe`` for a trusted old file, see :mod:`genarena.checkpoints`)."""
    ckpt = read_checkpoint(path, expected_role="tokenizer", allow_unsafe=allow_unsafe)
    hp = ckpt["hyper_parameters"]
    tok = build_tokenizer(hp["tokenizer"], hp["data"]["channels"], hp["data"]["resolution"])
    try:
        tok.load_state_dict(sub_state_dict(ckpt["state_dict"], "tokenizer"))
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {ckpt['path']} does not match its own tokenizer config: {e}") from None
    tok.eval().requires_grad_(False)
    hp = dict(hp, path=ckpt["path"])
    return tok, hp


__all__ = ["KINDS", "TOKENIZERS", "Tokenizer", "VQTokenizer", "MSVQTokenizer", "KLTokenizer", "MSKLTokenizer",
           "MultiScaleResidualQuantizer", "build_tokenizer", "load_tokenizer"]
