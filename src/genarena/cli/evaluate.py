"""``genarena-eval``: FID / IS / KID / precision-recall / class accuracy of a generator or of saved images.

    genarena-eval ckpt=runs/generator_var_mnist5k/<time> n=1000 seed=0 cfg=2.0
    genarena-eval images=samples/var/samples.npz data=mnist5k extractor=domain metrics=fid,kid
    genarena-eval images=my_pngs/ data=imagefolder data.root=/data/imagenet data.resolution=64

With ``ckpt=`` it samples ``n`` images, labels spread evenly over the classes, and compares them with
the run's own data; with ``images=`` (a folder of PNGs, or an .npz with ``images`` uint8 N x H x W x C
and optional ``labels``) it compares them with the split of ``data=`` (dotted ``data.*=`` overrides
refine it). Defaults come from the ``eval:`` block of ``conf/config.yaml``. Writes ``metrics.json``
into ``out`` (default ``<run dir or images dir>/eval/<extractor>_n<N>_seed<seed>/``); for a run the
scalars are also merged into the run's ``metrics.json`` and logged to its W&B run when it has one.
FID from fewer than ~2,000 images is biased upwards: compare numbers only at the same N.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from genarena.checkpoints import resolve_checkpoint
from genarena.cli.args import Arg, as_bool, optional, parse_args, run_tool
from genarena.cli.sample import SAMPLING_KEYS, sampling_options, save_samples
from genarena.cli.sample import SPEC as SAMPLE_SPEC
from genarena.errors import ConfigError, DataError
from genarena.metrics.fidelity import METRICS, Evaluator, check_eval_options, compose_config
from genarena.runs import EVAL_DIR, update_metrics, write_metrics

log = logging.getLogger("genarena")


def metric_list(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in METRICS]
    if bad or not names:
        raise ValueError(f"choose a comma-separated subset of {', '.join(METRICS)}")
    return names


SPEC = {
    "ckpt": Arg(optional(str), None, "generator checkpoint or run directory to sample from"),
    "images": Arg(optional(str), None, "instead of ckpt: a folder of PNGs or an .npz (images N x H x W x C uint8)"),
    "data": Arg(optional(str), None, "with images=: the dataset option (conf/data/<name>.yaml) to compare with"),
    "n": Arg(optional(int), None, "number of images (default eval.num_samples; with images=: all of them)"),
    "seed": Arg(optional(int), None, "sampling seed, also KID subsets / IS splits (default eval.seed)"),
    "split": Arg(optional(str), None, "real split: val | train (default eval.split)"),
    "extractor": Arg(optional(str), None, "auto | inception | domain (default eval.extractor)"),
    "inception_weights": Arg(optional(str), None, "local file of torch-fidelity's Inception weights"),
    "metrics": Arg(optional(metric_list), None, "comma-separated subset of fid,isc,kid,prc (default eval.metrics)"),
    "batch_size": Arg(optional(int), None, "images per sampling / feature batch (default eval.batch_size)"),
    "out": Arg(optional(str), None, "output directory of metrics.json (and the samples of ckpt=)"),
    "ema": Arg(as_bool, True, "use the EMA weights when the run kept them"),
    "checkpoint": Arg(optional(str), None, "of a run directory: best (lowest val/loss) | last "
                                           "(default eval.checkpoint)"),
    "device": Arg(optional(str), None, "sampling device: cpu, cuda, cuda:1 ... (default: cuda when available)"),
    **{k: SAMPLE_SPEC[k] for k in SAMPLING_KEYS},
}
# dotted keys passed to Hydra as overrides of the composed config
OVERRIDE_PREFIXES = ("data.", "classifier.", "eval.", "paths.")


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(plain key=value args, dotted data.* / classifier.* / eval.* / paths.* Hydra overrides)``."""
    overrides = [a for a in argv if a.startswith(OVERRIDE_PREFIXES)]
    return [a for a in argv if a not in overrides], overrides


def apply_eval_args(cfg: DictConfig, args: dict[str, Any]) -> None:
    """Command-line values over the config's ``eval`` block (None keeps the config's)."""
    ev = cfg.eval
    for key, cfg_key in (("n", "num_samples"), ("seed", "seed"), ("split", "split"), ("extractor", "extractor"),
                         ("metrics", "metrics"), ("batch_size", "batch_size"),
                         ("inception_weights", "inception_weights"), ("checkpoint", "checkpoint")):
        if args[key] is not None:
            ev[cfg_key] = args[key]
    if ev.num_samples < 1 or ev.batch_size < 1:
        raise ConfigError(f"n={ev.num_samples} and batch_size={ev.batch_size} must be positive")
    check_eval_options(ev)


def load_images(path: str | Path, channels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 ``(N, C, H, W)`` and labels ``(N,)`` (or None) from an .npz or a folder of PNGs."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".npz":
        try:
            with np.load(p) as f:
                files = list(f.files)
                images = f["images"] if "images" in files else None
                labels = f["labels"] if "labels" in files else None
        except (OSError, ValueError, EOFError) as e:
            raise DataError(f"images={p} is not a readable .npz ({type(e).__name__}: {e})") from None
        if images is None:
            raise DataError(f"images={p}: the .npz has no 'images' array (found {', '.join(files) or 'nothing'})")
        if images.ndim == 3:
            images = images[..., None]
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DataError(f"images={p}: expected uint8 (N, H, W, C), got {images.dtype} {images.shape}")
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        return x, None if labels is None else torch.as_tensor(labels).long()
    if p.is_dir():
        from PIL import Image

        files = sorted(p.glob("*.png"))
        if not files:
            raise DataError(f"images={p}: no .png files in that folder")
        mode = "L" if channels == 1 else "RGB"
        arrays = [np.asarray(Image.open(f).convert(mode)) for f in files]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise DataError(f"images={p}: the PNGs differ in size ({sorted(shapes)[:3]} ...)")
        x = torch.from_numpy(np.stack(arrays))
        return (x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)).contiguous(), None
    raise DataError(f"images={p} is neither an .npz file nor a folder of PNGs")


def find_wandb_run_id(run_dir: Path) -> str | None:
    """The id of the newest W&B run under ``<run_dir>/wandb/`` (``[offline-]run-<date>_<time>-<id>``)."""
    pattern = re.compile(r"^(?:offline-)?run-(\d{8}_\d{6})-([A-Za-z0-9]+)$")
    root = run_dir / "wandb"
    found = sorted((m.group(1), m.group(2)) for d in (root.iterdir() if root.is_dir() else [])
                   if d.is_dir() and (m := pattern.match(d.name)))
    return found[-1][1] if found else None


def log_to_wandb(run_dir: Path, scalars: dict[str, Any]) -> bool:
    """Log ``scalars`` (as ``eval/<key>`` and summary) to the run's W&B run, resumed by id; offline when there
    is no key or network. Never raises: a failure is one warning line. Returns whether it logged."""
    run_id = find_wandb_run_id(run_dir)
    if run_id is None:
        return False
    try:
        import wandb

        from genarena.lit.loggers import resolve_wandb_mode

        run_cfg = OmegaConf.load(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else OmegaConf.create()
        lcfg = run_cfg.get("logger") or {}
        mode = resolve_wandb_mode(lcfg.get("mode") or "auto")
        if mode == "disabled":
            return False
        run = wandb.init(id=run_id, resume="allow", project=lcfg.get("project") or "genarena",
                         entity=lcfg.get("entity"), dir=str(run_dir), mode=mode)
        numbers = {k: v for k, v in scalars.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        run.log({f"eval/{k}": v for k, v in numbers.items()})
        run.summary.update({k: v for k, v in scalars.items() if isinstance(v, (int, float, str))})
        run.finish()
        return True
    except Exception as e:  # no wandb, no network, a corrupt run directory...
        log.warning("could not log the evaluation to W&B run %s (%s: %s)", run_id, type(e).__name__, e)
        return False


def default_out(base: Path, scalars: dict[str, Any], seed: int) -> Path:
    return base / EVAL_DIR / f"{scalars['eval_extractor']}_n{scalars['eval_n']}_seed{seed}"


def apply_data_overrides(cfg: DictConfig, overrides: list[str]) -> None:
    """``data.key=value`` items (values parsed as YAML) over a run's data config."""
    for item in overrides:
        key, _, value = item.partition("=")
        if key.split(".")[1] not in cfg.data:
            raise ConfigError(f"{key}: the run's data config has no such key (keys: {', '.join(cfg.data)})")
        OmegaConf.update(cfg, key, yaml.safe_load(value), merge=False)


def score_generator(generator, tokenizer, hp: dict[str, Any], evaluator: Evaluator, sampling: dict[str, Any],
                    n: int, seed: int, batch_size: int, device: str | None = None):
    """Sample ``n`` images (labels balanced over the classes, fixed ``seed``) and score them.

    Returns ``(scalars, Generated)``: the evaluator's metrics plus sampling time per image, sampling
    FLOPs per image, sampling steps and the sampling options used.
    """
    from genarena.generators.generate import balanced_labels, generate

    labels = balanced_labels(n, hp["num_classes"])
    log.info("sampling %d images (%s, seed %d, %s)", len(labels), hp["generator"]["name"], seed, sampling)
    result = generate(generator, tokenizer, labels, sampling, seed, batch_size, device)
    scalars = evaluator(result.images, result.labels)
    scalars.update({
        "eval_seed": seed, "eval_weights": hp["weights"],
        **{f"eval_sampling_{k}": v for k, v in sampling.items()},
        "sample_s_per_image": result.seconds_per_image,
        "flops_sample_per_image": generator.flops_per_image(False, **sampling),
        "sampling_steps": generator.sampling_steps(**sampling),
    })
    return scalars, result


def evaluate_run(args: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    from genarena.generators import load_generator

    if args["data"]:
        raise ConfigError(f"data={args['data']} applies to images= only; a run is compared with its own data")
    cfg = compose_config([o for o in overrides if not o.startswith("data.")])
    apply_eval_args(cfg, args)
    ckpt = resolve_checkpoint(args["ckpt"], cfg.eval.checkpoint)
    generator, tokenizer, hp = load_generator(ckpt, use_ema=args["ema"])
    cfg.data = OmegaConf.create(hp["data"])
    apply_data_overrides(cfg, [o for o in overrides if o.startswith("data.")])
    evaluator = Evaluator(cfg)  # resolves the extractor before the (slow) sampling
    ev = cfg.eval
    sampling = sampling_options(hp["generator"]["sampling"], args)
    scalars, result = score_generator(generator, tokenizer, hp, evaluator, sampling, ev.num_samples, ev.seed,
                                      ev.batch_size, args["device"])
    scalars["eval_checkpoint"] = ckpt.stem  # best / last / the file given
    labels = result.labels
    in_run = ckpt.parent.name == "checkpoints"
    run_dir = ckpt.parent.parent if in_run else ckpt.parent
    out = Path(args["out"]) if args["out"] else default_out(run_dir, scalars, ev.seed)
    path = write_metrics(out, scalars)
    save_samples(out, result.images, result.labels, hp["num_classes"],
                 {"ckpt": str(ckpt), "n": len(labels), "seed": ev.seed, "sampling": sampling, "weights": hp["weights"]})
    if in_run and (run_dir / "metrics.json").is_file():
        update_metrics(run_dir, scalars)
        log_to_wandb(run_dir, scalars)
    return {**scalars, "metrics_path": str(path)}


def evaluate_images(args: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    if not args["data"]:
        raise ConfigError("images= needs data=<dataset option> (conf/data/*.yaml) naming the real data to compare with")
    cfg = compose_config([f"data={args['data']}", *overrides])
    apply_eval_args(cfg, args)
    images, labels = load_images(args["images"], cfg.data.channels)
    if args["n"] is not None:
        if args["n"] > len(images):
            raise ConfigError(f"n={args['n']} but images={args['images']} holds only {len(images)} images")
        images, labels = images[: args["n"]], None if labels is None else labels[: args["n"]]
    scalars = Evaluator(cfg)(images, labels)
    scalars["eval_seed"] = cfg.eval.seed
    src = Path(args["images"]).expanduser()
    out = Path(args["out"]) if args["out"] else default_out(src if src.is_dir() else src.parent, scalars, cfg.eval.seed)
    path = write_metrics(out, scalars)
    return {**scalars, "metrics_path": str(path)}


def evaluate_main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``key=value`` args, evaluate, write ``metrics.json``; returns the scalars and ``metrics_path``."""
    plain, overrides = split_overrides(sys.argv[1:] if argv is None else list(argv))
    args = parse_args("genarena-eval", __doc__, SPEC, plain)
    if bool(args["ckpt"]) == bool(args["images"]):
        raise ConfigError("genarena-eval: give exactly one of ckpt=<run dir or checkpoint> and images=<folder or .npz>")
    out = evaluate_run(args, overrides) if args["ckpt"] else evaluate_images(args, overrides)
    shown = {k: v for k, v in out.items() if k in ("fid", "isc_mean", "kid_mean", "precision", "recall", "class_acc")}
    print(f"{out['eval_n']} images vs {out['eval_n_real']} real ({out['eval_data']} {out['eval_split']}, "
          f"{out['eval_extractor']} features): " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()))
    print(f"wrote {out['metrics_path']}")
    return out


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(name)s][%(levelname)s] %(message)s")
    run_tool("genarena-eval", evaluate_main)


if __name__ == "__main__":
    main()
