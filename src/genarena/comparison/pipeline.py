"""The stages of ``genarena-compare``, each shown with its own progress.

1. the domain classifier of the dataset (cached; the offline feature extractor and class-accuracy judge);
2. the tokenizers, one Hydra multirun (``genarena-train -m task=tokenizer tokenizer=vq,msvq,kl``);
3. the generators, one Hydra multirun (``genarena-train -m task=generator generator=var,ar,maskgit,mar
   tokenizer.ckpt=auto``): each paradigm is its own run and its own W&B run, grouped by the sweep name;
4. evaluation: N class-balanced samples per paradigm (fixed seed) scored with torch-fidelity, plus
   reference rows: real training images and each tokenizer's reconstructions of them, all against the
   real validation split, so that every FID reads against its floor;
5. the report (:mod:`genarena.comparison.report`) and figures (:mod:`genarena.comparison.plots`).

Jobs that already finished with the same config are reused, so an interrupted comparison resumes.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from genarena.checkpoints import resolve_checkpoint
from genarena.comparison.plots import class_grid, save_frontier, save_sample_panels
from genarena.comparison.report import report_tables, write_report
from genarena.config import to_dict
from genarena.data import ImageDataModule
from genarena.data.sources import balanced_subset
from genarena.editing import score_edit_tasks
from genarena.errors import ConfigError, GenArenaError
from genarena.evaluation import make_evaluator, score_generator
from genarena.generators import GENERATORS, load_generator, tokenizer_for
from genarena.generators.generate import to_uint8
from genarena.lit.wandb_logging import run_group
from genarena.lit.wandb_results import log_evaluation, log_study
from genarena.metrics.classifier import classifier_cache_path, load_classifier
from genarena.metrics.fidelity import Evaluator
from genarena.runs import newest_finished_runs
from genarena.tokenizers import TOKENIZERS, load_tokenizer
from genarena.training.classifier import ensure_classifier

DEFAULT_OUT = Path("outputs") / "compare"  # ignored by git; compare.out=experiments/compare/<name> refreshes the
#                                            committed report
STAGES = 5


def check_options(opts: DictConfig, overrides: Sequence[str]) -> None:
    """Known paradigms and tokenizers, every paradigm's tokenizer included, overrides that apply to every job."""
    for key, known in (("generators", tuple(GENERATORS)), ("tokenizers", tuple(TOKENIZERS))):
        unknown = [x for x in opts[key] if x not in known]
        if unknown or not opts[key]:
            raise ConfigError(f"compare.{key}={list(opts[key])}: choose a non-empty subset of {', '.join(known)}")
    missing = sorted({tokenizer_for(g) for g in opts.generators} - set(opts.tokenizers))
    if missing:
        raise ConfigError(f"compare.generators={list(opts.generators)} need tokenizers {missing}, which "
                          f"compare.tokenizers={list(opts.tokenizers)} leaves out")
    bad = [o for o in overrides if o.lstrip("+~").startswith(("task=", "tokenizer=", "generator="))]
    if bad:
        raise ConfigError(f"genarena-compare: {bad} not accepted; choose paradigms and tokenizers with "
                          "compare.generators=[...] / compare.tokenizers=[...]")


def as_overrides(values: DictConfig | None, prefix: str = "") -> list[str]:
    """A nested config fragment as Hydra overrides: ``{trainer: {max_steps: 5}}`` -> ``["trainer.max_steps=5"]``
    (strings quoted, so values with ``:`` or ``=`` survive Hydra's grammar)."""
    def value(v: Any) -> str:
        if isinstance(v, str):
            return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(value(x) for x in v) + "]"
        return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

    out = []
    for key, v in to_dict(values or OmegaConf.create({})).items():
        if isinstance(v, dict):
            out += as_overrides(OmegaConf.create(v), f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={value(v)}")
    return out


def banner(step: int, text: str) -> None:
    print(f"\n==> [genarena-compare {step}/{STAGES}] {text}", flush=True)


def run_sweep(task_args: list[str]) -> int:
    """One ``genarena-train -m`` multirun in a subprocess (its progress bars stream through)."""
    cmd = [sys.executable, "-m", "genarena.cli.train", "-m", *task_args]
    print("$ genarena-train " + " ".join(cmd[3:]), flush=True)
    return subprocess.run(cmd, env=os.environ).returncode


@torch.no_grad()
def reconstruct(tokenizer, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> the tokenizer's uint8 reconstructions, same shape."""
    return torch.cat([to_uint8(tokenizer.decode(tokenizer.encode(x.float() / 127.5 - 1)))
                      for x in images.split(batch_size)])


def train_stages(opts: DictConfig, common: list[str], runs_dir: Path, stage_min: dict[str, float]
                 ) -> tuple[dict[str, Path], dict[tuple[str, int], Path]]:
    """Stages 2 and 3: the tokenizer multirun (once) and the generator multirun (every paradigm x training seed);
    returns the newest finished tokenizer runs and generator runs per (paradigm, seed)."""
    t = time.perf_counter()
    banner(2, f"tokenizers {list(opts.tokenizers)}")
    rc = run_sweep(["task=tokenizer", f"tokenizer={','.join(opts.tokenizers)}", *as_overrides(opts.tokenizer_args),
                    *common])
    tok_runs = newest_finished_runs(runs_dir, "tokenizer", "tokenizer")
    if rc != 0:
        print(f"the tokenizer sweep exited with {rc}; continuing with the finished runs {list(tok_runs)}", flush=True)
    stage_min["tokenizers"] = (time.perf_counter() - t) / 60

    t = time.perf_counter()
    paradigms = [g for g in opts.generators if tokenizer_for(g) in tok_runs]
    seeds = [int(s) for s in opts.seeds]
    banner(3, f"generators {paradigms} x seeds {seeds}")
    if paradigms:
        # a seed given on the command line names the W&B runs (var-d2-s1); the default seed 0 alone is not given
        seed_args = [] if seeds == [0] else [f"seed={','.join(map(str, seeds))}"]
        rc = run_sweep(["task=generator", f"generator={','.join(paradigms)}", "tokenizer.ckpt=auto", *seed_args,
                        *as_overrides(opts.generator_args), *common])
        if rc != 0:
            print(f"the generator sweep exited with {rc}; evaluating the runs that finished", flush=True)
    gen_runs = {(p, s): d for s in seeds for p, d in newest_finished_runs(runs_dir, "generator", "paradigm",
                                                                       seed=s).items() if p in opts.generators}
    stage_min["generators"] = (time.perf_counter() - t) / 60
    if not gen_runs:
        raise GenArenaError(f"genarena-compare: no generator run finished under {runs_dir}; see the logs above")
    return tok_runs, gen_runs


def evaluate_paradigms(opts: DictConfig, evaluator: Evaluator, checkpoint: str,
                       gen_runs: dict[tuple[str, int], Path], panels: dict[str, torch.Tensor],
                       device: str, wandb: bool = False) -> list[dict[str, Any]]:
    """One result row per finished (paradigm, training seed): training facts from its metrics.json plus
    sampled-image scores; the samples of each paradigm's first seed make its panel. With ``wandb``, each
    evaluation (and its sample grid) is logged into the W&B run of the run it evaluates."""
    rows = []
    for paradigm in opts.generators:
        for seed in [int(s) for s in opts.seeds]:
            if (paradigm, seed) not in gen_runs:
                continue
            run_dir = gen_runs[paradigm, seed]
            run_metrics = json.loads((run_dir / "metrics.json").read_text())
            generator, tokenizer, hp = load_generator(resolve_checkpoint(run_dir, checkpoint))
            sampling = dict(hp["generator"]["sampling"])
            scalars, result = score_generator(generator, tokenizer, hp, evaluator, sampling, opts.num_samples,
                                              opts.seed, opts.batch_size, device)
            grid = class_grid(result.images, result.labels, opts.grid_per_class)
            panels.setdefault(paradigm, grid)
            if wandb:
                log_evaluation(run_dir, scalars, run_metrics, image=grid)
            row = {
                "paradigm": paradigm, "seed": seed, "tokenizer": hp["tokenizer"]["name"],
                "params": run_metrics.get("params"),
                "train_gflops": (run_metrics.get("flops_train_total") or math.nan) / 1e9,
                "train_min": (run_metrics.get("train_time_s") or math.nan) / 60,
                "val_loss": run_metrics.get("val_loss"),
                "val_loss_best": run_metrics.get("val_loss_best"), "steps": run_metrics.get("steps"),
                "run_dir": str(run_dir), **scalars,
            }
            rows.append(row)
            print(f"{paradigm} (seed {seed}): FID {row.get('fid', math.nan):.2f}, class acc "
                  f"{row.get('class_acc', math.nan):.3f}, {row['sample_s_per_image']:.4f} s/image", flush=True)
    return rows


def editing_rows(opts: DictConfig, evaluator: Evaluator, checkpoint: str, gen_runs: dict[tuple[str, int], Path],
                 device: str) -> list[dict[str, Any]]:
    """The editing table: per paradigm (its first training seed), ``compare.edit_samples`` class-balanced
    validation images (held out from training) in-painted (``center``) and out-painted (``right``) under their own
    labels, scored with the comparison's evaluator (FID against the real split, class accuracy), with the error on
    the known pixels and the time per image (:func:`genarena.editing.score_edit_tasks`)."""
    real, real_labels = evaluator.real if evaluator.split == "val" else ImageDataModule(
        evaluator.data_cfg).real_images_uint8("val")
    keep = balanced_subset(real_labels, min(int(opts.edit_samples), len(real)))
    images, labels = real[keep], real_labels[keep]
    rows = []
    for paradigm in opts.generators:
        seed = next((int(s) for s in opts.seeds if (paradigm, int(s)) in gen_runs), None)
        if seed is None:
            continue
        generator, tokenizer, hp = load_generator(resolve_checkpoint(gen_runs[paradigm, seed], checkpoint))
        scores = score_edit_tasks(generator, tokenizer, dict(hp["generator"]["sampling"]), images, labels, evaluator,
                                  int(opts.seed), int(opts.batch_size), device)
        rows.append({"paradigm": paradigm, "seed": seed, "n": len(images), **scores})
        print(f"{paradigm} editing: in-paint FID {scores['inpaint_fid']:.2f} (class acc "
              f"{scores['inpaint_class_acc']:.3f}), out-paint FID {scores['outpaint_fid']:.2f} (class acc "
              f"{scores['outpaint_class_acc']:.3f})", flush=True)
    return rows


def over_seeds(rows: list[dict[str, Any]], key: str = "paradigm") -> list[dict[str, Any]]:
    """One row per paradigm (per value of ``key``): the first seed's row with every numeric column replaced by its
    mean over seeds, plus ``<column>_std`` (sample standard deviation; 0 with one seed), ``<column>_seeds`` (each
    seed's value) and ``seeds`` (how many)."""
    out = []
    for paradigm in dict.fromkeys(r[key] for r in rows):
        group = [r for r in rows if r[key] == paradigm]
        agg = dict(group[0], seeds=len(group), seed_list=[r["seed"] for r in group])
        for column, value in group[0].items():
            values = [r.get(column) for r in group]
            if column == "seed" or isinstance(value, bool) or not all(isinstance(v, (int, float)) for v in values):
                continue
            mean = sum(values) / len(values)
            var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
            agg[column], agg[f"{column}_std"], agg[f"{column}_seeds"] = mean, math.sqrt(var), values
        out.append(agg)
    return out


def reference_rows(cfg: DictConfig, opts: DictConfig, evaluator: Evaluator, tok_runs: dict[str, Path]
                   ) -> list[dict[str, Any]]:
    """Real training images and each tokenizer's reconstructions of them, scored like the samples."""
    train_images, train_labels = ImageDataModule(cfg.data).real_images_uint8("train")
    keep = balanced_subset(train_labels, int(opts.num_samples))
    train_images, train_labels = train_images[keep], train_labels[keep]
    refs = [{"paradigm": "real train split", **evaluator(train_images, train_labels)}]
    for tok_name in opts.tokenizers:
        if tok_name in tok_runs:
            tokenizer, _ = load_tokenizer(tok_runs[tok_name])
            recon = reconstruct(tokenizer.to("cpu"), train_images, opts.batch_size)
            refs.append({"paradigm": f"{tok_name} reconstructions", "run_dir": str(tok_runs[tok_name]),
                         **evaluator(recon, train_labels)})
    return refs


def hardware() -> str:
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads){gpu}")


def run_comparison(cfg: DictConfig, overrides: Sequence[str], command: str = "genarena-compare") -> Path:
    """The whole comparison for ``cfg`` (the ``compare`` root config); ``overrides`` (Hydra overrides other than
    ``compare.*``) are given to every training job. Returns the path of ``report.md``."""
    start, started_at = time.perf_counter(), time.time()
    opts = cfg.compare
    check_options(opts, overrides)
    name = opts.name or cfg.data.name
    runs_dir = Path(opts.runs_dir) / name
    out = Path(opts.out) if opts.out else DEFAULT_OUT / name
    sweep = f"compare-{name}"
    common = [*overrides, f"paths.runs_dir={runs_dir}", f"sweep_name={sweep}"]
    cfg.paths.runs_dir, cfg.sweep_name = str(runs_dir), sweep
    out.mkdir(parents=True, exist_ok=True)
    stage_min: dict[str, float] = {}

    t = time.perf_counter()
    banner(1, f"domain classifier of data={cfg.data.name} (cached in {cfg.paths.cache_dir})")
    classifier_cached = classifier_cache_path(cfg.paths.cache_dir, cfg.data, cfg.classifier).is_file()
    classifier_path = ensure_classifier(cfg)
    stage_min["classifier"] = (time.perf_counter() - t) / 60

    tok_runs, gen_runs = train_stages(opts, common, runs_dir, stage_min)
    earlier = [(f"tokenizer {n}", d) for n, d in tok_runs.items()]
    earlier += [(f"generator {p} (seed {s})", d) for (p, s), d in gen_runs.items()]
    reused = sorted(name for name, d in earlier if (d / "metrics.json").stat().st_mtime < started_at)

    t = time.perf_counter()
    banner(4, f"evaluation: {opts.num_samples} samples per paradigm and reference row")
    cfg.eval.num_samples = int(opts.num_samples)
    evaluator = make_evaluator(cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    real_val, val_labels = evaluator.real
    panels = {"real (val)": class_grid(real_val, val_labels, opts.grid_per_class)}
    to_wandb = cfg.logger.name == "wandb"
    per_seed = evaluate_paradigms(opts, evaluator, cfg.eval.checkpoint, gen_runs, panels, device, to_wandb)
    rows = over_seeds(per_seed)
    refs = reference_rows(cfg, opts, evaluator, tok_runs)
    stage_min["evaluation"] = (time.perf_counter() - t) / 60
    edits: list[dict[str, Any]] = []
    if opts.edit_samples:
        t = time.perf_counter()
        print(f"editing: in-/out-painting {opts.edit_samples} validation images per paradigm", flush=True)
        edits = editing_rows(opts, evaluator, cfg.eval.checkpoint, gen_runs, device)
        stage_min["editing"] = (time.perf_counter() - t) / 60

    banner(5, f"report in {out}")
    save_sample_panels(panels, out / "samples.png")
    save_frontier(rows, refs, out / "frontier.png", evaluator.extractor.kind, int(opts.num_samples))
    _, cmeta = load_classifier(classifier_path)
    extractor_note = ("" if evaluator.extractor.kind == "inception" else
                      f" (the project's domain classifier `{classifier_path.name}`, digest "
                      f"{evaluator.extractor.digest}: numbers compare only with the same classifier)")
    meta = {
        "name": name, "data": cfg.data.name, "split": evaluator.split, "n_real": len(real_val),
        "num_samples": int(opts.num_samples), "extractor": evaluator.extractor.kind, "extractor_note": extractor_note,
        "classifier_val_acc": cmeta.get("val_acc"), "seed": int(opts.seed), "batch_size": int(opts.batch_size),
        "checkpoint": cfg.eval.checkpoint, "device": device, "generator_args": as_overrides(opts.generator_args),
        "command": command, "hardware": hardware(),
        "missing": [f"{g} seed {s}" for g in opts.generators for s in opts.seeds if (g, int(s)) not in gen_runs],
        "seeds": [int(s) for s in opts.seeds], "per_seed": per_seed, "editing": edits,
        "tokenizer_runs": {k: str(v) for k, v in tok_runs.items()}, "stage_min": stage_min,
        "reused": (["domain classifier (cached)"] if classifier_cached else []) + reused,
        "total_min": (time.perf_counter() - start) / 60,
    }
    path = write_report(out, rows, refs, meta)
    if to_wandb:
        log_report_to_wandb(cfg, out, refs, meta, runs_dir)
    print(f"wrote {path} ({meta['total_min']:.1f} min)", flush=True)
    return path


def log_report_to_wandb(cfg: DictConfig, out: Path, refs: list[dict[str, Any]], meta: dict[str, Any],
                        runs_dir: Path) -> str | None:
    """The report as a run ``report`` of the study's W&B group (job type ``compare``): the tables (one row per
    paradigm and seed; the reference rows) and the figures ``samples.png`` and ``frontier.png``."""
    lcfg = cfg.logger
    tables_only = ("per_seed", "stage_min", "editing")
    config = {"compare": to_dict(cfg.compare), **{k: v for k, v in meta.items() if k not in tables_only}}
    return log_study(lcfg.mode, project=lcfg.project, entity=lcfg.entity, group=run_group(cfg), name="report",
                     job_type="compare", tags=["compare", cfg.data.name, *lcfg.tags], config=config,
                     directory=runs_dir, tables=report_tables(meta["per_seed"], refs, meta.get("editing")),
                     images={"samples": out / "samples.png", "frontier": out / "frontier.png"},
                     summary={"num_samples": meta["num_samples"], "extractor": meta["extractor"],
                              "seeds": len(meta["seeds"]), "total_min": meta["total_min"]})
