"""``genarena-import``: released checkpoints of the official models -> a genarena run directory (a Hydra app over
``conf/import.yaml``).

    genarena-import model=var tokenizer_file=vae_ch160v4096z32.pth generator_file=var_d16.pth out=runs/imported/var_d16
    genarena-import model=mar tokenizer_file=kl16.ckpt generator_file=checkpoint-last.pth out=runs/imported/mar_b
    genarena-import model=llamagen tokenizer_file=vq_ds16_c2i.pt generator_file=c2i_B_256.pt out=runs/imported/gpt_b

The run directory (``config.yaml``, ``checkpoints/last.ckpt``, ``metrics.json`` with provenance) is what
``genarena-sample ckpt=<out>`` and ``genarena-eval ckpt=<out> data.root=<imagenet>`` take. A wrong or truncated file
is one line naming its bad keys; an existing ``out`` is refused.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from genarena.cli.app import run_app


def import_checkpoints(cfg: DictConfig) -> Path:
    from genarena.official.importer import import_official  # lazy: torch loads only when the import starts

    out = import_official(cfg)
    print(f"wrote {out}; sample it with: genarena-sample ckpt={out} n=64")
    return out


def main() -> None:
    run_app("genarena-import", "import", import_checkpoints)


if __name__ == "__main__":
    main()
