"""``genarena-matrix``: evaluate the cells of the order x head matrix (``genarena-train -m +sweep=matrix``) and write
its report (a Hydra app over ``conf/matrix.yaml``).

    genarena-matrix                                          # outputs/matrix/mnist5k/report.md
    genarena-matrix matrix.out=experiments/matrix/mnist5k    # the committed report

``matrix.*`` are its options; every other override is the root config's (the data, the evaluation settings).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from genarena.cli.app import run_app, task_overrides


def matrix(cfg: DictConfig) -> Path:
    from genarena.comparison.matrix import run_matrix  # lazy: torch and Lightning load only when the job starts

    return run_matrix(cfg, " ".join(["genarena-matrix", *task_overrides()]))


def main() -> None:
    run_app("genarena-matrix", "matrix", matrix)


if __name__ == "__main__":
    main()
