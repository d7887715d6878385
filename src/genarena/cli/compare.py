"""``genarena-compare`` (``make compare``): the head-to-head comparison of the paradigms.

    genarena-compare                                        # mnist5k on CPU, about 30 minutes
    genarena-compare data=cifar10 trainer=gpu logger=wandb compare.generator_args=[trainer.max_steps=100000]

Stages, each shown with its own progress:

1. the domain classifier of the dataset (cached; the offline feature extractor and class-accuracy judge);
2. the tokenizers, one Hydra multirun (``genarena-train -m task=tokenizer tokenizer=vq,msvq,kl``);
3. the generators, one Hydra multirun (``genarena-train -m task=generator generator=var,ar,maskgit,mar
   tokenizer.ckpt=auto``): each paradigm is its own run and its own W&B run, grouped by the sweep name;
4. evaluation: N class-balanced samples per paradigm (fixed seed) scored with torch-fidelity, plus two
   reference rows: real training images and each tokenizer's reconstructions of them, all against the
   real validation split, so that every FID reads against its floor;
5. ``<out_dir>/<name>/report.md`` with the table, ``samples.png`` (grids side by side),
   ``frontier.png`` (quality vs sampling time), ``results.csv`` and ``results.json``.

``compare.*`` keys come from ``conf/compare.yaml``; all other arguments are Hydra overrides for every job.
Jobs that already finished with the same config are reused, so an interrupted comparison resumes.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from genarena.cli.args import run_tool
from genarena.config import config_dir
from genarena.errors import ConfigError, GenArenaError
from genarena.generators.generate import to_uint8

log = logging.getLogger("genarena")

PARADIGM_TOKENIZER = {"var": "msvq", "ar": "vq", "maskgit": "vq", "mar": "kl"}
TABLE = [  # (column, key in a result row, format)
    ("paradigm", "paradigm", "{}"), ("tokenizer", "tokenizer", "{}"), ("params", "params", "{:,}"),
    ("train GFLOPs", "train_gflops", "{:.3g}"), ("train min", "train_min", "{:.1f}"),
    ("val loss", "val_loss", "{:.4f}"),
    ("FID", "fid", "{:.2f}"), ("IS", "isc_mean", "{:.2f}"), ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"), ("class acc", "class_acc", "{:.3f}"), ("sample s/img", "sample_s_per_image",
                                                                             "{:.4f}"),
    ("sampling steps", "sampling_steps", "{}"),
]


# ------------------------------------------------------------------------------------ options
def load_options(argv: list[str]) -> tuple[DictConfig, list[str]]:
    """``(compare options, Hydra overrides)`` from ``compare.key=value`` and the remaining arguments."""
    opts = OmegaConf.load(config_dir() / "compare.yaml")
    mine = [a.removeprefix("compare.") for a in argv if a.startswith("compare.")]
    for item in mine:
        key = item.partition("=")[0]
        if key not in opts:
            raise ConfigError(f"compare.{key} is not a genarena-compare option; accepted: "
                              + ", ".join(f"compare.{k}" for k in opts))
    try:
        opts = OmegaConf.merge(opts, OmegaConf.from_dotlist(mine))
    except Exception as e:  # omegaconf's grammar errors
        raise ConfigError(f"genarena-compare: cannot parse {mine}: {e}") from None
    overrides = [a for a in argv if not a.startswith("compare.")]
    bad = [a for a in overrides if "=" not in a or a.startswith(("-", "task=", "tokenizer=", "generator="))]
    if bad:
        raise ConfigError(f"genarena-compare: {bad} not accepted; choose paradigms and tokenizers with "
                          "compare.generators=[...] / compare.tokenizers=[...], and give other settings as key=value")
    for key, known in (("generators", PARADIGM_TOKENIZER), ("tokenizers", ("vq", "msvq", "kl"))):
        unknown = [x for x in opts[key] if x not in known]
        if unknown or not opts[key]:
            raise ConfigError(f"compare.{key}={list(opts[key])}: choose a non-empty subset of {', '.join(known)}")
    missing = sorted({PARADIGM_TOKENIZER[g] for g in opts.generators} - set(opts.tokenizers))
    if missing:
        raise ConfigError(f"compare.generators={list(opts.generators)} need tokenizers {missing}, which "
                          f"compare.tokenizers={list(opts.tokenizers)} leaves out")
    return opts, overrides


# ------------------------------------------------------------------------------------- stages
def banner(step: int, total: int, text: str) -> None:
    print(f"\n==> [genarena-compare {step}/{total}] {text}", flush=True)


def run_sweep(task_args: list[str]) -> int:
    """One ``genarena-train -m`` multirun in a subprocess (its progress bars stream through)."""
    cmd = [sys.executable, "-m", "genarena.cli.train", "-m", *task_args]
    print("$ genarena-train " + " ".join(cmd[3:]), flush=True)
    return subprocess.run(cmd, env=os.environ).returncode


def finished_runs(runs_dir: Path, task: str, key: str) -> dict[str, Path]:
    """Newest finished run per ``metrics[key]`` (paradigm / tokenizer) of ``task`` under ``runs_dir``."""
    found: dict[str, tuple[float, Path]] = {}
    for path in runs_dir.rglob("metrics.json"):
        try:
            m = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if m.get("task") == task and m.get("status") == "finished" and m.get(key):
            t = path.stat().st_mtime
            if m[key] not in found or t > found[m[key]][0]:
                found[m[key]] = (t, path.parent)
    return {k: v[1] for k, v in found.items()}


@torch.no_grad()
def reconstruct(tokenizer, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> the tokenizer's uint8 reconstructions, same shape."""
    out = []
    for x in images.split(batch_size):
        out.append(to_uint8(tokenizer.decode(tokenizer.encode(x.float() / 127.5 - 1))))
    return torch.cat(out)


def balanced_subset(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of ``n`` items spread evenly over the classes of ``labels (M,)`` (first ones of each class):
    data sets are often stored sorted by class, so their first n items are not a fair sample."""
    from genarena.generators.generate import balanced_labels

    classes = labels.unique(sorted=True)
    want = classes[balanced_labels(n, len(classes))]
    picked = []
    for c in classes.tolist():
        pool = (labels == c).nonzero().flatten()
        picked.append(pool[: int((want == c).sum())])
    out = torch.cat(picked)
    if len(out) < n:  # a class with too few items: fill from the rest in order
        rest = torch.ones(len(labels), dtype=torch.bool)
        rest[out] = False
        out = torch.cat([out, rest.nonzero().flatten()[: n - len(out)]])
    return out


def class_grid(images: torch.Tensor, labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> one image ``(C, rows*H, per_class*W)`` with a row per class."""
    rows = []
    c, h, w = images.shape[1:]
    for k in labels.unique(sorted=True).tolist():
        row = images[labels == k][:per_class]
        if len(row) < per_class:
            row = torch.cat([row, row.new_zeros(per_class - len(row), c, h, w)])
        rows.append(torch.cat(list(row), dim=2))
    return torch.cat(rows, dim=1)


# ------------------------------------------------------------------------------------- report
def fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


def save_sample_panels(panels: dict[str, torch.Tensor], path: Path) -> None:
    """Grids ``{title: uint8 (C, H, W)}`` side by side in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 4.0), squeeze=False)
    for ax, (title, img) in zip(axes[0], panels.items()):
        arr = img.permute(1, 2, 0).numpy()
        ax.imshow(arr[..., 0] if arr.shape[2] == 1 else arr, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated in (lower x, lower y), sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def save_frontier(rows: list[dict[str, Any]], refs: list[dict[str, Any]], path: Path, extractor: str, n: int) -> None:
    """FID and class accuracy vs sampling seconds per image (log x); the FID Pareto frontier as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    pts = [(r["sample_s_per_image"], r["fid"]) for r in rows]
    for r in rows:
        ax1.scatter(r["sample_s_per_image"], r["fid"], s=60, zorder=3)
        ax1.annotate(r["paradigm"], (r["sample_s_per_image"], r["fid"]), textcoords="offset points", xytext=(6, 4))
        ax2.scatter(r["sample_s_per_image"], r["class_acc"], s=60, zorder=3)
        ax2.annotate(r["paradigm"], (r["sample_s_per_image"], r["class_acc"]), textcoords="offset points",
                     xytext=(6, 4))
    front = pareto_front(pts)
    if len(front) > 1:
        ax1.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, label="Pareto frontier")
    for ref in refs:
        ax1.axhline(ref["fid"], lw=0.8, ls=":", color="gray")
        ax1.annotate(ref["paradigm"], (ax1.get_xlim()[0], ref["fid"]), fontsize=7, color="gray",
                     textcoords="offset points", xytext=(2, 2))
    ax1.set_xscale("log")
    ax1.set_xlabel("sampling time (s / image)")
    ax1.set_ylabel(f"FID ({extractor} features, N={n}; lower is better)")
    ax1.set_title("quality vs sampling time")
    if len(front) > 1:
        ax1.legend(loc="best", fontsize=8)
    ax2.set_xscale("log")
    ax2.set_xlabel("sampling time (s / image)")
    ax2.set_ylabel("class accuracy of samples")
    ax2.set_title("class accuracy vs sampling time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out: Path, rows: list[dict[str, Any]], refs: list[dict[str, Any]], meta: dict[str, Any]) -> Path:
    """report.md, results.csv and results.json in ``out``."""
    keys = sorted({k for r in rows + refs for k in r})
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for r in rows + refs:
            writer.writerow(r)
    (out / "results.json").write_text(json.dumps({"meta": meta, "paradigms": rows, "references": refs}, indent=2,
                                                 default=str))
    extractor, n = meta["extractor"], meta["num_samples"]
    head = "| " + " | ".join(c for c, _, _ in TABLE) + " |"
    lines = [
        f"# genarena-compare: {meta['name']}", "",
        f"Paradigms trained against frozen tokenizers on `{meta['data']}`, one size for all "
        f"(generator overrides: `{' '.join(meta['generator_args']) or 'none'}`).", "",
        f"- Every FID / IS / precision / recall: **N = {n}** images vs the real `{meta['split']}` split "
        f"({meta['n_real']} images), **{extractor}** features{meta['extractor_note']}.",
        f"- Class accuracy: the domain classifier's label agrees with the requested class "
        f"(real validation accuracy of that classifier: {fmt(meta.get('classifier_val_acc'), '{:.3f}')}).",
        f"- Sampling: {n} class-balanced labels, seed {meta['seed']}, each run's default sampling config and "
        f"its {meta.get('checkpoint', 'last')} checkpoint (`eval.checkpoint`), batch {meta['batch_size']}, "
        f"on {meta['device']}.",
        f"- Command: `{meta['command']}`; hardware: {meta['hardware']}; total wall time "
        f"{meta['total_min']:.1f} min.", "",
        "## Paradigms", "", head, "|" + "---|" * len(TABLE),
    ]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(k), s) for _, k, s in TABLE) + " |")
    lines += ["", f"## Reference rows (floors of the FID above; same N = {n}, same {extractor} features)", "",
              "| reference | FID | IS | precision | recall | class acc |", "|---|---|---|---|---|---|"]
    for r in refs:
        lines.append(f"| {r['paradigm']} | {fmt(r.get('fid'), '{:.2f}')} | {fmt(r.get('isc_mean'), '{:.2f}')} | "
                     f"{fmt(r.get('precision'), '{:.3f}')} | {fmt(r.get('recall'), '{:.3f}')} | "
                     f"{fmt(r.get('class_acc'), '{:.3f}')} |")
    if meta["reused"]:
        lines += ["", f"Reused from earlier runs (not trained by this invocation, so its wall time leaves them out; "
                      f"a reused generator's training time is in the table): {', '.join(meta['reused'])}."]
    if meta["missing"]:
        lines += ["", f"**Missing runs** (failed or not finished; see their run directories): {meta['missing']}"]
    lines += ["", "## Samples", "", "![samples](samples.png)", "",
              "Rows are classes, one panel per paradigm; the first panel is real validation images.", "",
              "## Quality vs sampling time", "", "![frontier](frontier.png)", "",
              "## Runs", ""]
    for r in rows:
        lines.append(f"- {r['paradigm']}: `{r['run_dir']}`")
    for name, d in meta["tokenizer_runs"].items():
        lines.append(f"- tokenizer {name}: `{d}`")
    lines += ["", "Stage wall times (min): " + ", ".join(f"{k} {v:.1f}" for k, v in meta["stage_min"].items()), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


# --------------------------------------------------------------------------------------- main
def compare_main(argv: list[str] | None = None) -> Path:
    from genarena.checkpoints import resolve_checkpoint
    from genarena.cli.evaluate import score_generator
    from genarena.data import ImageDataModule
    from genarena.generators import load_generator
    from genarena.metrics.classifier import load_classifier
    from genarena.metrics.fidelity import Evaluator, compose_config, ensure_classifier
    from genarena.tokenizers import load_tokenizer

    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip() + "\n\nOptions (conf/compare.yaml):\n" + (config_dir() / "compare.yaml").read_text())
        raise SystemExit(0)
    start, started_at = time.perf_counter(), time.time()
    opts, overrides = load_options(argv)
    name = opts.name or compose_config(overrides).data.name
    runs_dir = Path(opts.runs_dir) / name
    out = Path(opts.out_dir) / name
    sweep = f"compare-{name}"
    common = [*overrides, f"paths.runs_dir={runs_dir}", f"sweep_name={sweep}"]
    cfg = compose_config(common)  # validates the overrides before any training starts
    out.mkdir(parents=True, exist_ok=True)
    stage_min: dict[str, float] = {}
    total = 5

    t = time.perf_counter()
    banner(1, total, f"domain classifier of data={cfg.data.name} (cached in {cfg.paths.cache_dir})")
    from genarena.metrics.classifier import classifier_cache_path

    classifier_cached = classifier_cache_path(cfg.paths.cache_dir, cfg.data).is_file()
    classifier_path = ensure_classifier(cfg)
    stage_min["classifier"] = (time.perf_counter() - t) / 60

    t = time.perf_counter()
    banner(2, total, f"tokenizers {list(opts.tokenizers)}")
    rc = run_sweep(["task=tokenizer", f"tokenizer={','.join(opts.tokenizers)}", *opts.tokenizer_args, *common])
    tok_runs = finished_runs(runs_dir, "tokenizer", "tokenizer")
    if rc != 0:
        log.warning("the tokenizer sweep exited with %d; continuing with the finished runs %s", rc, list(tok_runs))
    stage_min["tokenizers"] = (time.perf_counter() - t) / 60

    t = time.perf_counter()
    paradigms = [g for g in opts.generators if PARADIGM_TOKENIZER[g] in tok_runs]
    banner(3, total, f"generators {paradigms}")
    if paradigms:
        rc = run_sweep(["task=generator", f"generator={','.join(paradigms)}", "tokenizer.ckpt=auto",
                        *opts.generator_args, *common])
        if rc != 0:
            log.warning("the generator sweep exited with %d; evaluating the runs that finished", rc)
    gen_runs = {k: v for k, v in finished_runs(runs_dir, "generator", "paradigm").items() if k in opts.generators}
    reused = sorted(f"{kind} {name}" for kind, runs in (("tokenizer", tok_runs), ("generator", gen_runs))
                    for name, d in runs.items() if (d / "metrics.json").stat().st_mtime < started_at)
    stage_min["generators"] = (time.perf_counter() - t) / 60
    if not gen_runs:
        raise GenArenaError(f"genarena-compare: no generator run finished under {runs_dir}; see the logs above")

    t = time.perf_counter()
    banner(4, total, f"evaluation: {opts.num_samples} samples per paradigm and reference row")
    cfg.eval.num_samples = int(opts.num_samples)
    evaluator = Evaluator(cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows: list[dict[str, Any]] = []
    real_val, val_labels = evaluator.real
    panels = {"real (val)": class_grid(real_val, val_labels, opts.grid_per_class)}
    for paradigm in opts.generators:
        if paradigm not in gen_runs:
            continue
        run_dir = gen_runs[paradigm]
        run_metrics = json.loads((run_dir / "metrics.json").read_text())
        generator, tokenizer, hp = load_generator(resolve_checkpoint(run_dir, cfg.eval.checkpoint))
        sampling = dict(hp["generator"]["sampling"])
        scalars, result = score_generator(generator, tokenizer, hp, evaluator, sampling, opts.num_samples, opts.seed,
                                          opts.batch_size, device)
        panels[paradigm] = class_grid(result.images, result.labels, opts.grid_per_class)
        row = {
            "paradigm": paradigm, "tokenizer": hp["tokenizer"]["name"], "params": run_metrics.get("params"),
            "train_gflops": (run_metrics.get("flops_train_total") or math.nan) / 1e9,
            "train_min": (run_metrics.get("train_time_s") or math.nan) / 60, "val_loss": run_metrics.get("val_loss"),
            "val_loss_best": run_metrics.get("val_loss_best"), "steps": run_metrics.get("steps"),
            "run_dir": str(run_dir), **scalars,
        }
        rows.append(row)
        print(f"{paradigm}: FID {row.get('fid', math.nan):.2f}, class acc {row.get('class_acc', math.nan):.3f}, "
              f"{row['sample_s_per_image']:.4f} s/image", flush=True)

    refs: list[dict[str, Any]] = []
    train_images, train_labels = ImageDataModule(cfg.data).real_images_uint8("train")
    keep = balanced_subset(train_labels, int(opts.num_samples))
    train_images, train_labels = train_images[keep], train_labels[keep]
    refs.append({"paradigm": "real train split", **evaluator(train_images, train_labels)})
    for tok_name in opts.tokenizers:
        if tok_name not in tok_runs:
            continue
        tokenizer, _ = load_tokenizer(tok_runs[tok_name])
        recon = reconstruct(tokenizer.to("cpu"), train_images, opts.batch_size)
        refs.append({"paradigm": f"{tok_name} reconstructions", "run_dir": str(tok_runs[tok_name]),
                     **evaluator(recon, train_labels)})
    stage_min["evaluation"] = (time.perf_counter() - t) / 60

    banner(5, total, f"report in {out}")
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
        "checkpoint": cfg.eval.checkpoint,
        "device": device, "generator_args": list(opts.generator_args),
        "command": " ".join(["genarena-compare", *argv]) if argv else "genarena-compare  (make compare)",
        "hardware": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
                    f"({torch.get_num_threads()} threads)" + (f", {torch.cuda.get_device_name()}"
                                                             if torch.cuda.is_available() else ", no GPU"),
        "missing": [g for g in opts.generators if g not in gen_runs],
        "tokenizer_runs": {k: str(v) for k, v in tok_runs.items()}, "stage_min": stage_min,
        "reused": (["domain classifier (cached)"] if classifier_cached else []) + reused,
        "total_min": (time.perf_counter() - start) / 60,
    }
    path = write_report(out, rows, refs, meta)
    print(f"wrote {path} ({meta['total_min']:.1f} min)", flush=True)
    return path


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(name)s][%(levelname)s] %(message)s")
    run_tool("genarena-compare", compare_main)


if __name__ == "__main__":
    main()
