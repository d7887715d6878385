"""What every genarena command shares: Hydra apps over ``conf/`` and one-line errors.

Only Hydra and the config module are imported here; each command imports the library (torch,
Lightning) inside its task function, so ``--help``, ``--cfg job`` and tab completion answer fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from genarena.config import compose, config_dir, register_configs
from genarena.errors import GenArenaError

HELP_FLAGS = ("--help", "-h")


def report_errors(prog: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a genarena error becomes one line ``<prog>: error: ...`` on stderr and exit status 2."""
    try:
        return fn()
    except GenArenaError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def config_groups() -> str:
    """``group: option, option, ...`` for every option group under ``conf/`` (Hydra's own groups aside)."""
    root = config_dir()
    lines = []
    for group in sorted(p for p in root.rglob("*") if p.is_dir() and p.relative_to(root).parts[0] != "hydra"):
        options = sorted(f.stem for f in group.glob("*.yaml"))
        if options:
            lines.append(f"{group.relative_to(root).as_posix()}: {', '.join(options)}")
    return "\n".join(lines)


def print_help(config_name: str, overrides: list[str]) -> None:
    """The command's help from its ``hydra.help.template`` (``$APP_CONFIG_GROUPS``, ``$CONFIG``). Hydra's own
    ``--help`` builds the same page but copies its whole config repository once per group (seconds)."""
    cfg = compose(config_name, overrides, return_hydra_config=True)
    template = OmegaConf.select(cfg, "hydra.help.template")
    body = OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
    try:
        print(template.replace("$APP_CONFIG_GROUPS", config_groups()).replace("$CONFIG", body), flush=True)
    except BrokenPipeError:  # `--help | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def run_app(prog: str, config_name: str, task: Callable[[DictConfig], Any]) -> None:
    """Run ``task`` as a Hydra app over ``conf/<config_name>.yaml`` (command-line overrides, ``--help``,
    ``--cfg job``, ``-m`` multiruns, shell completion). In a single run a genarena error is one line and exit
    status 2; in a multirun it fails that job."""
    register_configs()
    if any(a in HELP_FLAGS for a in sys.argv[1:]):
        report_errors(prog, lambda: print_help(config_name, [a for a in sys.argv[1:] if a not in HELP_FLAGS]))
        raise SystemExit(0)

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)
    def main(cfg: DictConfig) -> Any:
        if HydraConfig.get().mode == RunMode.RUN:
            return report_errors(prog, lambda: task(cfg))
        return task(cfg)

    main()


def task_overrides() -> list[str]:
    """The command line's overrides of the running Hydra app (``key=value`` strings, as typed)."""
    return list(HydraConfig.get().overrides.task)
