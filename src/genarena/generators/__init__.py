"""Generators: the paradigms behind one interface (``Generator``), one shared transformer, two heads."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from genarena.checkpoints import read_checkpoint, sub_state_dict
from genarena.errors import CheckpointError, ConfigError
from genarena.generators.ar import RasterAR
from genarena.generators.base import Generator, tokenizer_of_kind
from genarena.generators.mar import MAR
from genarena.generators.mar_raster import RasterMAR
from genarena.generators.maskgit import MaskGIT
from genarena.generators.var import VAR
from genarena.generators.var_diffusion import VARDiffusion
from genarena.tokenizers import Tokenizer, build_tokenizer

GENERATORS: dict[str, type[Generator]] = {"var": VAR, "ar": RasterAR, "maskgit": MaskGIT, "mar": MAR,
                                          "var_diffusion": VARDiffusion}
# a paradigm's variants, chosen by one of its config keys: generator=mar generator.order=raster -> RasterMAR
VARIANTS: dict[str, tuple[str, dict[str, type[Generator]]]] = {"mar": ("order", {"random": MAR, "raster": RasterMAR})}

NON_ARCHITECTURE_KEYS = ("name", "head", "sampling")  # head: declared by the class (Generator.head_kind)
# architecture keys added after configs were saved without them, with the value those configs were trained with
# (so that older checkpoints keep loading); new configs always carry them (conf/generator/*.yaml)
ADDED_KEYS: dict[str, dict[str, Any]] = {
    "var": {"k_bias": True, "init": "shared", "init_adaln": 0.5, "init_adaln_gamma": 1e-5, "init_head": 0.02},
    "ar": {"backbone": "shared", "ffn_multiple_of": 256},
    "mar": {"backbone": "shared", "diffusion_loss": "eps"},
}
# sampling options added later, with the behaviour older checkpoints sampled with (filled in by load_generator, so
# that ``sampling.<key>=`` overrides apply to them too)
ADDED_SAMPLING_KEYS: dict[str, dict[str, Any]] = {"mar": {"sampler": "ddpm", "eta": 0.0}}


def generator_class(cfg: Mapping[str, Any]) -> tuple[type[Generator], tuple[str, ...]]:
    """The class for ``cfg`` (the paradigm named by ``cfg["name"]``, or the variant its variant key selects) and
    the variant key, which the class does not take."""
    name = cfg["name"]
    if name not in GENERATORS:
        raise ConfigError(f"generator.name={name!r} is not known; choose one of {', '.join(GENERATORS)}")
    if name not in VARIANTS:
        return GENERATORS[name], ()
    key, classes = VARIANTS[name]
    if cfg[key] not in classes:
        raise ConfigError(f"generator.{key}={cfg[key]!r} is not accepted; choose one of {', '.join(classes)}")
    return classes[cfg[key]], (key,)


def tokenizer_for(paradigm: str) -> str:
    """The tokenizer option a paradigm trains against, from the token kind it declares (``Generator.requires``)."""
    if paradigm not in GENERATORS:
        raise ConfigError(f"generator={paradigm!r} is not known; choose one of {', '.join(GENERATORS)}")
    return tokenizer_of_kind(GENERATORS[paradigm].requires)


def build_generator(cfg: Mapping[str, Any], tokenizer: Tokenizer, num_classes: int) -> Generator:
    """Build the paradigm named by ``cfg["name"]`` (a plain dict of ``conf/generator/*.yaml``)."""
    cls, selectors = generator_class(cfg)
    kwargs = {**ADDED_KEYS.get(cfg["name"], {}), **cfg}
    kwargs = {k: v for k, v in kwargs.items() if k not in NON_ARCHITECTURE_KEYS + selectors}
    return cls(tokenizer=tokenizer, num_classes=num_classes, **kwargs)


def load_generator(path: str | Path, use_ema: bool = True, *,
                   allow_unsafe: bool = False) -> tuple[Generator, Tokenizer, dict[str, Any]]:
    """Generator (eval mode) and its tokenizer from a generator checkpoint or run directory.

    The checkpoint is self-contained: it carries the tokenizer's config and weights. A run trained with
    weight averaging (``callbacks.ema``) stores the averaged weights as its state dict and the trained ones
    beside them; ``use_ema=False`` takes the trained ones. ``hp["weights"]`` says which: ``ema`` | ``trained``
    (a checkpoint with one set of weights may name it: an imported MAR's are MAR's EMA weights, ``genarena-import``).
    The file is read with ``weights_only=True`` (``allow_unsafe`` for a trusted old file, see
    :mod:`genarena.checkpoints`).
    """
    ckpt = read_checkpoint(path, expected_role="generator", allow_unsafe=allow_unsafe)
    hp = ckpt["hyper_parameters"]
    averaged = "current_model_state" in ckpt
    sd = ckpt["current_model_state"] if averaged and not use_ema else ckpt["state_dict"]
    tokenizer = build_tokenizer(hp["tokenizer"], hp["data"]["channels"], hp["data"]["resolution"])
    generator = build_generator(hp["generator"], tokenizer, hp["num_classes"])
    try:
        tokenizer.load_state_dict(sub_state_dict(sd, "tokenizer"))
        generator.load_state_dict(sub_state_dict(sd, "generator"))
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {ckpt['path']} does not match its own config: {e}") from None
    tokenizer.eval().requires_grad_(False)
    generator.eval().requires_grad_(False)
    weights = ("ema" if use_ema else "trained") if averaged else hp.get("weights", "trained")
    gen_cfg = dict(hp["generator"])
    gen_cfg["sampling"] = {**ADDED_SAMPLING_KEYS.get(gen_cfg["name"], {}), **gen_cfg.get("sampling", {})}
    return generator, tokenizer, dict(hp, generator=gen_cfg, path=ckpt["path"], weights=weights)


__all__ = ["GENERATORS", "VARIANTS", "Generator", "VAR", "RasterAR", "MaskGIT", "MAR", "RasterMAR", "VARDiffusion",
           "build_generator", "generator_class", "load_generator", "tokenizer_for"]
