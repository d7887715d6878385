"""What every genarena command shares: Hydra apps over ``conf/`` and one-line errors.

Only Hydra and the config module are imported here; each command imports the library (torch,
Lightning) inside its task function, so ``--help``, ``--cfg job`` and tab completion answer fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from genarena.config import check_path_name, compose, config_dir, register_configs
from genarena.errors import ConfigError, GenArenaError
from genarena.runs import check_writable_dir, config_fingerprint, read_metrics

HELP_FLAGS = ("--help", "-h")


def report_errors(prog: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a genarena error becomes one line ``<prog>: error: ...`` on stderr and exit status 2."""
    try:
        return fn()
    except GenArenaError as e:
        message = str(e).strip()
        if "Traceback (most recent call last)" in message:  # re-raised from a DataLoader worker: its own last line
            message = message.splitlines()[-1]
        print(f"{prog}: error: {message}", file=sys.stderr)
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


class StartupChecks(Callback):
    """A Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``) run before Hydra creates the run (or sweep)
    directory: the names that become part of its path (``experiment_name``, ``sweep_name``) stay inside
    ``paths.runs_dir``, the directory can be created, and an existing run directory (``hydra.run.dir=<run>``) holds
    a run of the same config. A problem is one line and exit status 2, and nothing is created or written."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, dir_key: str) -> None:
        def check() -> None:
            for key in ("experiment_name", "sweep_name"):
                value = OmegaConf.select(config, key, default=None)
                if value is not None:
                    check_path_name(key, value)
            target = Path(str(OmegaConf.select(config, dir_key)))
            if target == Path("."):
                return
            runs_dir = OmegaConf.select(config, "paths.runs_dir", default=None)
            inside = runs_dir is not None and Path(runs_dir) in (target, *target.parents)
            check_writable_dir(*(("paths.runs_dir", runs_dir) if inside else (dir_key, target)))
            recorded = read_metrics(target).get("config_fingerprint") if target.is_dir() else None
            if recorded is not None and OmegaConf.select(config, "tokenizer.ckpt", default=None) != "auto":
                job = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
                if job.get("task") == "generator":  # what the job rewrites before it fingerprints its config
                    from genarena.generators.cells import apply_match_params, resolve_head  # lazy: torch, only here

                    resolve_head(job)
                    apply_match_params(job)
                if config_fingerprint(job) != recorded:  # before Hydra writes its .hydra/ files into that run
                    raise ConfigError(f"{dir_key}={target} already holds a run of another config (fingerprint "
                                      f"{recorded}); it is never overwritten: choose another directory")

        report_errors(str(OmegaConf.select(config, "hydra.help.app_name", default="genarena")), check)


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
