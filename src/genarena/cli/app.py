"""What every genarena command shares: Hydra apps over ``conf/`` and one-line errors.

Only Hydra and the config module are imported here; each command imports the library (torch,
Lightning) inside its task function, so ``--help``, ``--cfg job`` and tab completion answer fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from genarena.config import config_dir, register_configs
from genarena.errors import GenArenaError


def report_errors(prog: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a genarena error becomes one line ``<prog>: error: ...`` on stderr and exit status 2."""
    try:
        return fn()
    except GenArenaError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def run_app(prog: str, config_name: str, task: Callable[[DictConfig], Any]) -> None:
    """Run ``task`` as a Hydra app over ``conf/<config_name>.yaml`` (command-line overrides, ``--help``,
    ``--cfg job``, ``-m`` multiruns, shell completion). In a single run a genarena error is one line and exit
    status 2; in a multirun it fails that job."""
    register_configs()

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)
    def main(cfg: DictConfig) -> Any:
        if HydraConfig.get().mode == RunMode.RUN:
            return report_errors(prog, lambda: task(cfg))
        return task(cfg)

    main()


def task_overrides() -> list[str]:
    """The command line's overrides of the running Hydra app (``key=value`` strings, as typed)."""
    return list(HydraConfig.get().overrides.task)
