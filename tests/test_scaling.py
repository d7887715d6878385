"""Scaling laws: power-law fits, run collection, the genarena-scaling CLI and the sweep presets."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from genarena.cli.scaling import main as scaling_main
from genarena.config import config_dir, register_configs
from genarena.errors import GenArenaError
from genarena.runs import write_metrics
from genarena.scaling.collect import collect_local, collect_wandb
from genarena.scaling.fit import (
    PowerLawFit,
    SaturatingFit,
    ScalingError,
    Unfit,
    fit_groups,
    fit_power_law,
    fit_saturating,
    lower_envelope,
)

ALPHA, BETA = -0.23, 2.0e-3


# ------------------------------------------------------------------------------------------- fits
def test_power_law_recovers_alpha_and_beta_exactly():
    x = np.geomspace(1e4, 1e8, 8)
    fit = fit_power_law(x, (BETA * x) ** ALPHA)
    assert isinstance(fit, PowerLawFit) and fit.n == 8
    assert fit.alpha == pytest.approx(ALPHA, rel=1e-6)
    assert fit.beta == pytest.approx(BETA, rel=1e-6)
    assert fit.r == pytest.approx(-1.0, abs=1e-9)
    assert np.allclose(fit.predict(x), (BETA * x) ** ALPHA, rtol=1e-6)
    assert fit.alpha_ci == pytest.approx((ALPHA, ALPHA), rel=1e-6)


def test_increasing_power_law_has_r_plus_one():
    x = np.geomspace(1, 100, 5)
    fit = fit_power_law(x, 3 * x ** 0.5)
    assert fit.alpha == pytest.approx(0.5) and fit.r == pytest.approx(1.0)


def test_noisy_power_law_truth_inside_bootstrap_ci():
    rng = np.random.default_rng(0)
    x = np.geomspace(1e5, 1e9, 12)
    y = (BETA * x) ** ALPHA * np.exp(rng.normal(0, 0.02, x.size))
    fit = fit_power_law(x, y, n_boot=1000, seed=0)
    assert fit.alpha_ci[0] < ALPHA < fit.alpha_ci[1]
    assert fit.beta_ci[0] < BETA < fit.beta_ci[1]
    assert fit.r < -0.99 and fit.ci_draws >= 900
    # fixed seed: the same interval twice
    assert fit_power_law(x, y, n_boot=1000, seed=0).alpha_ci == fit.alpha_ci


@pytest.mark.parametrize("x, y, message", [
    ([1, 2, 3], [1.0, None, 0.5], "no y value"),
    ([1, 2, 3], [1.0, 0.0, 0.5], "> 0"),
    ([1, -2, 3], [1.0, 0.8, 0.5], "> 0"),
    ([1, 2, 3], [1.0, float("nan"), 0.5], "> 0"),
    ([5, 5, 5], [1.0, 0.9, 0.8], "2 distinct x"),
    ([5], [1.0], "2 distinct x"),
    ([1, 2, 4], [0.7, 0.7, 0.7], "does not change"),
])
def test_power_law_bad_points_give_a_clear_error(x, y, message):
    with pytest.raises(ScalingError, match=message) as e:
        fit_power_law(x, y)
    assert isinstance(e.value, GenArenaError)


def test_two_points_fit_without_ci():
    fit = fit_power_law([10, 100], [1.0, 0.5])
    assert fit.alpha == pytest.approx(math.log10(0.5)) and fit.alpha_ci is None and fit.n == 2


def test_saturating_fit_recovers_parameters():
    x = np.geomspace(1e2, 1e7, 10)
    fit = fit_saturating(x, 0.5 + (1e3 / x) ** 0.3)
    assert isinstance(fit, SaturatingFit)
    assert fit.E == pytest.approx(0.5, rel=1e-3)
    assert fit.X0 == pytest.approx(1e3, rel=1e-2)
    assert fit.alpha == pytest.approx(0.3, rel=1e-3)
    with pytest.raises(ScalingError, match="at least 4 points"):
        fit_saturating([1, 2], [2.0, 1.0])
    with pytest.raises(ScalingError, match="does not decrease"):
        fit_saturating([1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0])


def test_lower_envelope():
    x = [1, 2, 3, 4, 5]
    y = [5.0, 6.0, 4.0, 4.5, 3.0]
    assert lower_envelope(x, y) == [0, 2, 4]


def test_fit_groups_reports_unfit_instead_of_crashing():
    rows = [
        {"paradigm": "var", "params": 1e5, "val_loss": 3.0},
        {"paradigm": "var", "params": 1e6, "val_loss": 2.5},
        {"paradigm": "var", "params": 1e7, "val_loss": None},  # missing metric: left out
        {"paradigm": "var", "params": 1e8, "val_loss": 1.9},
        {"paradigm": "ar", "params": 1e6, "val_loss": 2.0},  # a single point
        {"paradigm": "mar", "params": 1e6},  # metric absent
    ]
    fits = fit_groups(rows, "val_loss", "params", saturating=True)
    assert isinstance(fits["var"]["power_law"], PowerLawFit) and fits["var"]["power_law"].n == 3
    assert isinstance(fits["var"]["saturating"], Unfit) and "4 points" in fits["var"]["saturating"].reason
    assert isinstance(fits["ar"]["power_law"], Unfit) and "2 distinct x" in fits["ar"]["power_law"].reason
    mar = fits["mar"]["power_law"]
    assert isinstance(mar, Unfit) and "no run has a positive val_loss" in mar.reason
    # everything serialises without NaN
    json.dumps({p: {k: f.to_dict() for k, f in kinds.items()} for p, kinds in fits.items()}, allow_nan=False)


# ---------------------------------------------------------------------------------------- collect
def n_params(depth: int) -> float:
    return 18 * depth * (64 * depth) ** 2


def fake_run(root: Path, name: str, *, paradigm: str = "var", depth: int = 1, steps: int = 100,
             batch: int = 32, sweep: str | None = "depth", data: str = "mnist5k", status: str = "finished",
             task: str = "generator", mtime: float | None = None, **extra) -> Path:
    """A run directory with a metrics.json like fit_generator writes (power-law losses)."""
    run_dir = root / name
    n = n_params(depth)
    tokens = {"var": 130, "ar": 64, "maskgit": 64, "mar": 64}.get(paradigm, 64)
    images = steps * batch
    flops = 6 * n * tokens * images
    m = {"status": status, "task": task, "experiment_name": "x", "sweep": sweep, "data": data, "seed": 0,
         "run_dir": str(run_dir)}
    if status == "finished" and task == "generator":
        m.update(paradigm=paradigm, depth=depth, width=64 * depth, heads=depth, params=n * 1.2,
                 params_non_embedding=n, tokens_per_image=tokens, steps=steps, batch_size=batch,
                 images_seen=images, tokens_seen=images * tokens, flops_train_per_image=6 * n * tokens,
                 flops_train_total=flops, val_loss=(BETA * n) ** ALPHA * (1 + 1e3 / images),
                 val_loss_best=(BETA * n) ** ALPHA, val_token_error=(1e-3 * flops) ** -0.05)
    elif status == "failed":
        m["error"] = "RuntimeError: boom"
    m.update(extra)
    write_metrics(run_dir, m)
    if mtime is not None:
        os.utime(run_dir / "metrics.json", (mtime, mtime))
    return run_dir


def test_collect_local_keeps_finished_generator_runs(tmp_path):
    fake_run(tmp_path, "a/0", depth=1, mtime=1000)
    fake_run(tmp_path, "a/1", depth=2, mtime=1000)
    old = fake_run(tmp_path, "b/1", depth=2, mtime=500)  # an older re-run of the same point
    fake_run(tmp_path, "a/2", depth=3, status="failed")
    fake_run(tmp_path, "a/3", depth=4, status="running")
    fake_run(tmp_path, "tok/0", task="tokenizer", tokenizer="msvq")
    fake_run(tmp_path, "a/4", depth=4, sweep="compute")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.json").write_text("{not json")
    evaluation = tmp_path / "a" / "0" / "eval" / "domain_n500_seed0"  # genarena-eval's output: not a run
    evaluation.mkdir(parents=True)
    (evaluation / "metrics.json").write_text('{"fid": 12.0}')
    col = collect_local([tmp_path], sweep="depth")
    assert [r["depth"] for r in col.runs] == [1, 2]
    assert all(r["status"] == "finished" and r["task"] == "generator" for r in col.runs)
    assert col.replaced == [str(old)]
    assert sorted(reason.split(":")[0] for _, reason in col.skipped) == ["failed", "running", "unreadable"]
    assert col.other_tasks == 1 and col.filtered == 1
    summary = col.summary()
    assert "2 finished generator run(s)" in summary and "failed 1" in summary and "running 1" in summary
    assert len(collect_local([tmp_path], sweep="depth", keep="all").runs) == 3
    assert len(collect_local([tmp_path]).runs) == 3  # no sweep filter: the compute run too
    with pytest.raises(ScalingError, match="does not exist"):
        collect_local([tmp_path / "nowhere"])
    with pytest.raises(ScalingError, match="keep="):
        collect_local([tmp_path], keep="oldest")


class FakeRun:
    def __init__(self, summary, state="finished", created="2024-01-01T00:00:00Z", rid="r1"):
        self.summary, self.state, self.created_at = summary, state, created
        self.path = ["ent", "proj", rid]


class FakeApi:
    def __init__(self, runs=None, fail=False):
        self._runs, self.fail, self.calls = runs or [], fail, []

    def runs(self, path, filters=None):
        self.calls.append((path, filters))
        if self.fail:
            raise ConnectionError("api.wandb.ai unreachable")
        return self._runs


def test_collect_wandb_reads_summaries_and_reports_unreachable_api():
    good = {"task": "generator", "status": "finished", "paradigm": "ar", "depth": 1, "data": "mnist5k",
            "steps": 10, "batch_size": 4, "val_loss": 2.0, "media": {"_type": "image"}, "nan": float("nan")}
    crashed = FakeRun({"task": "generator", "paradigm": "ar"}, state="crashed", rid="r2")
    api = FakeApi([FakeRun(good), crashed])
    col = collect_wandb("proj", entity="ent", group="depth", api=api)
    assert api.calls == [("ent/proj", {"group": "depth"})]
    assert len(col.runs) == 1 and col.runs[0]["run"] == "ent/proj/r1" and "media" not in col.runs[0]
    assert col.runs[0]["nan"] is None and col.runs[0]["time"] > 0
    assert col.skipped == [("ent/proj/r2", "crashed")]
    with pytest.raises(ScalingError, match="cannot read runs of W&B project 'ent/proj'"):
        collect_wandb("proj", entity="ent", api=FakeApi(fail=True))


# -------------------------------------------------------------------------------------------- CLI
def fake_sweep(root: Path) -> None:
    """var: a depth x steps grid; ar, maskgit: 3 depths; mar: one run (cannot be fitted). FID on var."""
    i = 0
    for depth in (1, 2, 3, 4):
        for steps in (100, 200, 400):
            fid = 50.0 * (depth * steps / 100) ** -0.4
            fake_run(root, f"var/{i}", paradigm="var", depth=depth, steps=steps, sweep="paradigms", fid=fid,
                     sample_s_per_image=0.01 * depth)
            i += 1
    for paradigm in ("ar", "maskgit"):
        for depth in (1, 2, 3):
            fake_run(root, f"{paradigm}/{depth}", paradigm=paradigm, depth=depth, steps=400,
                     sweep="paradigms")
    fake_run(root, "mar/1", paradigm="mar", depth=1, steps=400, sweep="paradigms", val_token_error=None)
    fake_run(root, "var/failed", status="failed", sweep="paradigms")


def test_cli_end_to_end(tmp_path, capsys):
    fake_sweep(tmp_path / "runs")
    out = tmp_path / "out"
    scaling_main(["--runs", str(tmp_path / "runs"), "--sweep", "paradigms", "--out", str(out), "--saturating",
                  "--bootstrap", "200"])
    printed = capsys.readouterr().out
    assert "fitted metric: val_loss_best vs params_non_embedding" in printed
    assert "skipped 1 (failed 1)" in printed and "no fit" in printed

    with (out / "points.csv").open() as f:
        points = list(csv.DictReader(f))
    assert len(points) == 12 + 3 + 3 + 1
    assert {"paradigm", "params_non_embedding", "flops_train_total", "val_loss_best", "on_frontier"} <= set(
        points[0])

    report = json.loads((out / "fits.json").read_text())
    assert report["metric"] == "val_loss_best" and report["n_runs"] == 19
    var = report["fits"]["var"]["val_loss_best"]["params_non_embedding"]["power_law"]
    assert var["fit"] and var["alpha"] == pytest.approx(ALPHA, rel=1e-6)
    assert var["beta"] == pytest.approx(BETA, rel=1e-6)
    assert var["r"] == pytest.approx(-1.0) and var["n"] == 12 and set(var["ci"]) >= {"alpha", "beta", "level"}
    assert report["fits"]["var"]["val_loss_best"]["flops_train_total"]["frontier"]["fit"]
    assert "saturating" in report["fits"]["var"]["val_loss_best"]["params"]
    mar = report["fits"]["mar"]["val_loss_best"]["params_non_embedding"]["power_law"]
    assert mar["fit"] is False and "2 distinct x" in mar["reason"]
    assert report["fits"]["var"]["fid"]["sample_s_per_image"]["power_law"]["fit"]
    json.dumps(report, allow_nan=False)

    for name in ("loss_vs_params", "loss_vs_compute", "token_error_vs_compute", "fid_vs_compute",
                 "fid_vs_sampling_time"):
        for ext in ("png", "pdf"):
            assert (out / f"{name}.{ext}").stat().st_size > 1000, f"{name}.{ext}"


def test_cli_skips_absent_metrics_and_reports_errors_in_one_line(tmp_path, capsys):
    fake_run(tmp_path / "runs", "0", depth=1)
    fake_run(tmp_path / "runs", "1", depth=2)
    out = tmp_path / "out"
    scaling_main(["--runs", str(tmp_path / "runs"), "--out", str(out), "--no-plots"])
    assert (out / "fits.json").is_file() and not list(out.glob("*.png"))
    scaling_main(["--runs", str(tmp_path / "runs"), "--out", str(out)])
    assert (out / "loss_vs_params.png").is_file() and not (out / "fid_vs_compute.png").exists()
    capsys.readouterr()

    for argv, message in [
        (["--runs", str(tmp_path / "nowhere")], "does not exist"),
        (["--runs", str(tmp_path / "runs"), "--sweep", "other"], "no finished generator runs"),
        (["--runs", str(tmp_path / "runs"), "--metric", "fid"], "no run has --metric fid"),
        (["--source", "wandb"], "needs --project"),
    ]:
        with pytest.raises(SystemExit) as e:
            scaling_main([*argv, "--out", str(out)])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("genarena-scaling: error:") and message in err and "\n" not in err


def test_cli_refuses_mixed_data_sets(tmp_path, capsys):
    fake_run(tmp_path, "0", depth=1)
    fake_run(tmp_path, "1", depth=2, data="cifar10")
    with pytest.raises(SystemExit):
        scaling_main(["--runs", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "--data" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- presets
SWEEPS = {
    "depth": {"generator": "var", "generator.depth": "1,2,3,4"},
    "compute": {"generator": "var", "generator.depth": "1,2,3", "trainer.max_steps": "100,200,400"},
    "paradigms": {"generator": "var,ar,maskgit,mar", "generator.depth": "1,2,3,4"},
}


def compose_sweep(name: str, overrides: list[str] | None = None):
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=[f"+sweep={name}", *(overrides or [])], return_hydra_config=True)


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweep_presets_compose(name):
    cfg = compose_sweep(name)
    assert cfg.task == "generator" and cfg.tokenizer.ckpt == "auto"
    assert cfg.sweep_name == name and cfg.logger.group == name
    assert cfg.optim.lr == 2.0e-3  # the generator task's optimiser, not the tokenizer's
    assert dict(cfg.hydra.sweeper.params) == SWEEPS[name]
    assert cfg.hydra.sweep.dir == f"runs/scaling_{name}_mnist5k/{name}" or cfg.hydra.sweep.dir.endswith(
        f"/scaling_{name}_mnist5k/{name}")
    assert cfg.trainer.val_check_interval <= min(int(s) for s in str(
        cfg.hydra.sweeper.params.get("trainer.max_steps", cfg.trainer.max_steps)).split(","))
    assert cfg.optim.warmup_steps < cfg.trainer.max_steps


def test_command_line_value_replaces_a_swept_list():
    """``genarena-train -m +sweep=depth generator=ar`` sweeps ar only (Hydra's basic sweeper: the command
    line comes after hydra.sweeper.params, and a later value of a key replaces the earlier one)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = compose_sweep("depth", ["generator=ar", "logger=wandb"])
    assert cfg.logger.group == "depth"
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    overrides = OverridesParser.create().parse_overrides([*params, "generator=ar"])
    jobs = BasicSweeper.split_arguments(overrides, None)[0]
    assert len(jobs) == 4 and all("generator=ar" in job and "generator=var" not in job for job in jobs)
