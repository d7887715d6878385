"""``genarena-compare`` (``make compare``): the head-to-head comparison of the paradigms (a Hydra app over
``conf/compare.yaml``).

    genarena-compare                                        # mnist5k on CPU, about 30 minutes
    genarena-compare data=cifar10 trainer=gpu logger=wandb "compare.generator_args=[trainer.max_steps=100000]"

``compare.*`` are its options; every other override is given to every training job and to the evaluation.
The report goes to ``compare.out`` (default ``outputs/compare/<name>``, ignored by git).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from genarena.cli.app import run_app, task_overrides


def compare(cfg: DictConfig) -> Path:
    from genarena.comparison import run_comparison  # lazy: torch and Lightning load only when the job starts

    given = task_overrides()
    command = " ".join(["genarena-compare", *given]) if given else "genarena-compare  (make compare)"
    return run_comparison(cfg, [o for o in given if not o.lstrip("+~").startswith("compare.")], command)


def main() -> None:
    run_app("genarena-compare", "compare", compare)


if __name__ == "__main__":
    main()
