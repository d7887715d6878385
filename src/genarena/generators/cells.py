"""The order x head matrix: which paradigm is each cell, and ``generator=<order> generator.head=<head>``.

=============  ===================================  ====================================
order          ce head                               diffusion head
=============  ===================================  ====================================
raster         ``ar``                                ``mar`` with ``order=raster``
masked         ``maskgit``                           ``mar``
next-scale     ``var``                               ``var_diffusion``
=============  ===================================  ====================================

Every generator class declares its cell (``Generator.order``, ``Generator.head_kind``) and every generator config its
head (``generator.head``). A config whose ``head`` is not its paradigm's names the other cell of the same order:
``generator=ar generator.head=diffusion`` is ``generator=mar generator.order=raster``, ``generator=var
generator.head=diffusion`` is ``generator=var_diffusion``, ``generator=mar generator.head=ce`` is ``generator=maskgit``
(the paradigm names are the cells' names). :func:`resolve_head` rewrites such a config into that cell's paradigm
before a job starts (the run's ``config.yaml`` records the paradigm): what the config changed from its own option
file (``conf/generator/<name>.yaml``: depth, width, sampling.cfg, ...) carries over; everything else is the cell's own
option file (its paper's settings). A changed key the cell's paradigm does not have is an error naming it.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from genarena.config import check_choice, compose, to_dict
from genarena.errors import ConfigError
from genarena.generators import VARIANTS, build_generator, generator_class
from genarena.generators.heads import HEADS
from genarena.tokenizers import load_tokenizer

log = logging.getLogger("genarena")

ORDERS = ("raster", "masked", "next-scale")
# (order, head) -> (paradigm, its selector values): the generator option implementing the cell
CELLS: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("raster", "ce"): ("ar", {}),
    ("raster", "diffusion"): ("mar", {"order": "raster"}),
    ("masked", "ce"): ("maskgit", {}),
    ("masked", "diffusion"): ("mar", {"order": "random"}),
    ("next-scale", "ce"): ("var", {}),
    ("next-scale", "diffusion"): ("var_diffusion", {}),
}


def cell_of(generator_cfg: Any) -> tuple[str, str]:
    """``(order, head)`` of the paradigm a generator config builds (its class's, whatever ``head`` says)."""
    cls, _ = generator_class(to_dict(generator_cfg) if isinstance(generator_cfg, DictConfig) else generator_cfg)
    return cls.order, cls.head_kind


def cell_label(order: str, head: str) -> str:
    """``"raster x diffusion"``."""
    return f"{order} x {head}"


def flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a nested dict's leaves."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resolve_head(cfg: DictConfig) -> bool:
    """Rewrite ``cfg.generator`` in place into the paradigm of the cell its ``head`` names (module docstring), when
    that is not the configured paradigm's own head; returns whether it did. ``experiment_name`` and ``logger.run_name``
    keep the values they had (a run stays under the directory its command names; ``ar-diffusion`` stays a name)."""
    g = cfg.generator
    check_choice("generator.head", g.head, HEADS)
    order, own_head = cell_of(g)
    if g.head == own_head:
        return False
    paradigm, selectors = CELLS[order, g.head]
    source = to_dict(g)
    shipped = flat(to_dict(compose("config", [f"generator={g.name}"]).generator))
    ignore = {"name", "head", *([VARIANTS[g.name][0]] if g.name in VARIANTS else [])}
    changed = {k: v for k, v in flat(source).items() if k not in ignore and shipped.get(k, object()) != v}
    target = compose("config", [f"generator={paradigm}"]).generator
    for key, value in selectors.items():
        target[key] = value
    target_keys = flat(to_dict(target))
    missing = [k for k in changed if k not in target_keys]
    if missing:
        raise ConfigError(
            f"generator={g.name} generator.head={g.head} is the {cell_label(order, g.head)} cell, generator={paradigm}"
            + "".join(f" generator.{k}={v}" for k, v in selectors.items())
            + f", which has no {', '.join(f'generator.{k}' for k in missing)} (set on generator={g.name}); set the "
              f"cell's options on generator={paradigm} directly")
    for key, value in changed.items():
        OmegaConf.update(target, key, value, merge=False)
    log.info("generator=%s generator.head=%s is the %s cell: generator=%s%s (carried over: %s)", g.name, g.head,
             cell_label(order, g.head), paradigm, "".join(f" generator.{k}={v}" for k, v in selectors.items()),
             ", ".join(f"{k}={v}" for k, v in changed.items()) or "nothing")
    cfg.experiment_name = cfg.experiment_name  # resolved now: these may name the configured paradigm and head
    if cfg.logger.get("run_name"):
        cfg.logger.run_name = cfg.logger.run_name
    cfg.generator = target
    return True


# ------------------------------------------------------------------------------ equal parameters across cells
def width_step(generator_cfg: dict[str, Any], heads: int) -> int:
    """Widths tried by :func:`match_width`: multiples of the heads, of ``4 heads`` under 2-D RoPE (its head dim is a
    multiple of 4)."""
    return 4 * heads if generator_cfg.get("pos_embed") == "rope2d" else heads


def non_embedding_params(generator_cfg: dict[str, Any], tokenizer: Any, width: int, heads: int) -> int:
    """Non-embedding parameters of the generator ``generator_cfg`` builds at ``width``."""
    return build_generator({**generator_cfg, "width": width, "heads": heads}, tokenizer, 1).num_params(
        non_embedding=True)


def match_width(generator_cfg: dict[str, Any], tokenizer: Any, target: int) -> tuple[int, int]:
    """The width (a multiple of :func:`width_step`, heads as configured: ``depth`` by default) whose generator has
    the non-embedding parameter count closest to ``target``, and that count (a bisection: counts grow with the
    width)."""
    heads = generator_cfg["heads"] or generator_cfg["depth"]
    step = width_step(generator_cfg, heads)
    count = {}

    def params(multiple: int) -> int:
        if multiple not in count:
            count[multiple] = non_embedding_params(generator_cfg, tokenizer, multiple * step, heads)
        return count[multiple]

    high = 1
    while params(high) < target:
        high *= 2
    low = high // 2  # params(low) < target <= params(high), or low = 0
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if params(mid) < target else (low, mid)
    best = min([m for m in (low, high) if m >= 1], key=lambda m: abs(params(m) - target))
    return best * step, params(best)


def apply_match_params(cfg: DictConfig) -> int | None:
    """``match_params=N``: set ``generator.width`` to the width whose non-embedding parameters come closest to N, for
    the tokenizer ``cfg.tokenizer.ckpt`` (so every cell of a sweep has about N, whatever its head and order); returns
    that count (None when ``match_params`` is not set)."""
    target = cfg.get("match_params")
    if not target:
        return None
    if cfg.generator.width is not None:
        raise ConfigError(f"match_params={target} chooses generator.width, but generator.width={cfg.generator.width} "
                          "is set too; give one of them")
    tokenizer, _ = load_tokenizer(cfg.tokenizer.ckpt, allow_unsafe=cfg.allow_unsafe_load)
    width, count = match_width(to_dict(cfg.generator), tokenizer, int(target))
    log.info("match_params=%d: generator=%s (%s head) at width %d has %d non-embedding parameters (%+.1f%%)", target,
             cfg.generator.name, cfg.generator.head, width, count, 100 * (count - target) / target)
    cfg.generator.width = width
    return count
