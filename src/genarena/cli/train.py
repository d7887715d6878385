"""``genarena-train``: train a tokenizer, the domain classifier or a generator (a Hydra app over ``conf/config.yaml``).

    genarena-train task=tokenizer tokenizer=msvq data=mnist5k
    genarena-train task=classifier data=mnist5k
    genarena-train task=generator generator=var tokenizer.ckpt=runs/tokenizer_msvq_mnist5k/<time>
    genarena-train -m task=generator generator=var,ar generator.depth=1,2,4 tokenizer.ckpt=auto   (a sweep)
"""

from __future__ import annotations

from omegaconf import DictConfig

from genarena.cli.app import run_app


def train(cfg: DictConfig) -> float | None:
    from genarena.training import run_training  # lazy: torch and Lightning load only when a job starts

    value = run_training(cfg).get("val_loss")
    return float(value) if isinstance(value, (int, float)) else None


def main() -> None:
    run_app("genarena-train", "config", train)


if __name__ == "__main__":
    main()
