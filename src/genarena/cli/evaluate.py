"""``genarena-eval``: FID / IS / KID / precision-recall / class accuracy of a generator run or of saved images
(a Hydra app over ``conf/eval.yaml``).

    genarena-eval ckpt=runs/generator_var_mnist5k/<time> eval.num_samples=1000 sampling.cfg=2.0
    genarena-eval images=samples/var/samples.npz data=mnist5k eval.extractor=domain eval.metrics=[fid,kid]
    genarena-eval write_statistics=stats/mnist5k_val.npz data=mnist5k eval.extractor=domain   (then
    eval.fid_statistics_file=stats/mnist5k_val.npz scores FID against it, as papers do with ADM's reference .npz)

With ``ckpt=`` it samples ``eval.num_samples`` images (labels balanced over the classes) and compares them
with the run's own data (``data.<key>=`` overrides refine it); with ``images=`` it compares them with ``data=``.
Writes ``metrics.json`` into ``out``; for a run the scalars also go into the run's ``metrics.json`` and W&B run.
FID from fewer than ~2,000 images is biased upwards: compare numbers only at the same N.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from genarena.cli.app import run_app, task_overrides
from genarena.config import check_classifier, check_eval_options, check_known_keys, check_range, check_sampling, to_dict
from genarena.errors import ConfigError
from genarena.runs import check_writable_dir


def check_options(cfg: DictConfig) -> None:
    """Everything checkable before loading or sampling: keys, the eval and classifier blocks, ranges, sampling
    values, the output folder."""
    check_known_keys(cfg)
    check_eval_options(cfg.eval)
    check_classifier(cfg.classifier)
    if cfg.n is not None:
        check_range("n", cfg.n, 1, accepted="null (all images) or at least 1")
    check_sampling("sampling", cfg.sampling)
    if cfg.out:
        check_writable_dir("out", cfg.out)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    check_options(cfg)
    from genarena.evaluation import evaluate_images, evaluate_run, write_reference_statistics  # lazy: torch

    if cfg.write_statistics:
        if cfg.ckpt or cfg.images:
            raise ConfigError("write_statistics= writes the statistics of data's eval.split; drop ckpt= / images=")
        done = write_reference_statistics(cfg, cfg.write_statistics)
        print(f"wrote {done['path']}: FID statistics ({done['dim']}-d {done['extractor']} features) of "
              f"{done['n']} images, {done['source']}")
        return done
    if bool(cfg.ckpt) == bool(cfg.images):
        raise ConfigError("give exactly one of ckpt=<run dir or checkpoint> and images=<folder or .npz>")
    given = task_overrides()
    if cfg.ckpt:
        if cfg.n is not None:
            raise ConfigError("n= applies to images=; a run is sampled eval.num_samples times")
        if any(o.split("=")[0].lstrip("+") == "data" for o in given):
            raise ConfigError("data=<option> applies to images= only; a run is compared with its own data "
                              "(data.<key>=<value> refines it)")
        data = {key.split(".", 1)[1]: cfg.data[key.split(".", 1)[1]]
                for key in (o.split("=")[0].lstrip("+") for o in given) if key.startswith("data.")}
        out = evaluate_run(cfg, cfg.ckpt, sampling=to_dict(cfg.sampling), ema=cfg.ema, device=cfg.device,
                           out=cfg.out, data=data)
    else:
        out = evaluate_images(cfg, cfg.images, n=cfg.n, out=cfg.out)
    shown = {k: v for k, v in out.items() if k in ("fid", "isc_mean", "kid_mean", "precision", "recall", "class_acc")}
    against = (f"{out['eval_n_real']} real ({out['eval_data']} {out['eval_split']}" if "eval_n_real" in out
               else f"the statistics {out['eval_fid_reference']} (")
    print(f"{out['eval_n']} images vs {against}, {out['eval_extractor']} features): "
          + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
    print(f"wrote {out['metrics_path']}")
    return out


def main() -> None:
    run_app("genarena-eval", "eval", evaluate)


if __name__ == "__main__":
    main()
