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

from genarena.cli.scaling import compare_exponents
from genarena.cli.scaling import main as scaling_main
from genarena.config import config_dir, register_configs
from genarena.errors import GenArenaError
from genarena.runs import write_metrics
from genarena.scaling.collect import (
    POINT_COLUMNS,
    SCALING_POINT_KEYS,
    collect_local,
    collect_wandb,
    read_points,
    write_points,
)
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
from genarena.scaling.plot import PlotSpec, equation_label, figure_panels, figure_shared, fit_label

from .wandb_files import logged_image, read_runs, read_table

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
                  "--bootstrap", "200", "--no-plots"])  # the plots: test_points_cli_end_to_end
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


# ------------------------------------------------------------------------------------ points.csv
def test_points_csv_round_trip(tmp_path):
    """write_points then read_points gives the same value (and type) in every column."""
    fake_sweep(tmp_path / "runs")
    fake_run(tmp_path / "runs", "var/seed1", paradigm="var", depth=1, steps=100, sweep="paradigms", seed=1,
             sample_s_per_image=0.02, eval_extractor="domain", eval_n=500)
    runs = collect_local([tmp_path / "runs"]).runs
    for i, r in enumerate(runs):
        r["on_frontier"] = i % 3 == 0 if i % 4 else None
    write_points(runs, tmp_path / "points.csv")
    back = read_points([tmp_path / "points.csv"], keep="all").runs
    assert len(back) == len(runs) == 20
    key = lambda r: (r["paradigm"], r["depth"], r["steps"], r["seed"])
    for a, b in zip(sorted(runs, key=key), sorted(back, key=key)):
        for col in POINT_COLUMNS:
            assert b.get(col) == a.get(col) and type(b.get(col)) is type(a.get(col)), (col, a.get(col), b.get(col))
    # a directory stands for its points.csv; anything else is a clear error
    assert len(read_points([tmp_path], keep="all").runs) == 20
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ScalingError, match="no 'paradigm' column"):
        read_points([tmp_path / "other.csv"])
    with pytest.raises(ScalingError, match="does not exist"):
        read_points([tmp_path / "nowhere.csv"])


# ----------------------------------------------------------------------------------------- seeds
SEED_SLOPES = (-0.02, -0.01, 0.0, 0.01, 0.02)  # each seed's exponent departs from ALPHA by this


def seeded_rows(paradigm: str = "var", alpha: float = ALPHA, noise: float = 0.002, rng_seed: int = 0,
                slopes: tuple[float, ...] = SEED_SLOPES) -> list[dict]:
    """4 sizes x len(slopes) seeds of a known power law: seed s follows exponent alpha + slopes[s] (the
    seed-to-seed spread) times iid log-normal noise of sd ``noise``."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for depth in (1, 2, 3, 4):
        n = n_params(depth)
        for seed, d in enumerate(slopes):
            rows.append({"paradigm": paradigm, "data": "mnist5k", "depth": depth, "width": 64 * depth,
                         "steps": 200, "batch_size": 32, "seed": seed, "params": n,
                         "val_loss": (BETA * n) ** (alpha + d) * math.exp(rng.normal(0, noise))})
    return rows


def test_several_seeds_fit_through_all_points_with_a_seed_bootstrap():
    rows = seeded_rows()
    fit = fit_groups(rows, "val_loss", "params", point_keys=SCALING_POINT_KEYS, n_boot=500)["var"]["power_law"]
    assert isinstance(fit, PowerLawFit) and not fit.degenerate
    assert (fit.n, fit.points, fit.seeds, fit.ci_method) == (20, 4, (5, 5), "seeds")
    slope = np.polyfit(np.log([r["params"] for r in rows]), np.log([r["val_loss"] for r in rows]), 1)[0]
    assert fit.alpha == pytest.approx(slope, rel=1e-9)  # least squares through every run
    assert fit.alpha_ci[0] < ALPHA < fit.alpha_ci[1]
    width = fit.alpha_ci[1] - fit.alpha_ci[0]
    for seed in range(len(SEED_SLOPES)):
        one = fit_groups([r for r in rows if r["seed"] == seed], "val_loss", "params",
                         point_keys=SCALING_POINT_KEYS, n_boot=500)["var"]["power_law"]
        assert (one.n, one.seeds, one.ci_method) == (4, (1, 1), "points")
        # one seed's points lie on its own line: its interval misses the seed-to-seed spread
        assert width > 2 * (one.alpha_ci[1] - one.alpha_ci[0]), seed
    assert fit.band(np.array([n_params(1), n_params(4)])) is not None


def test_reruns_of_one_seed_reduced_but_seeds_kept(tmp_path):
    fake_run(tmp_path, "s0", depth=1, seed=0, mtime=1000)
    fake_run(tmp_path, "s1", depth=1, seed=1, mtime=1000)
    old = fake_run(tmp_path, "s1-old", depth=1, seed=1, mtime=500)  # an older re-run of seed 1
    col = collect_local([tmp_path])
    assert sorted(r["seed"] for r in col.runs) == [0, 1] and col.replaced == [str(old)]
    assert "2 seeds (0, 1)" in col.summary()


# ---------------------------------------------------------------------------------- degenerate fits
def test_degenerate_fits_are_flagged():
    x = np.geomspace(1e4, 1e7, 6)
    flat = fit_power_law(x, [2.0, 2.1, 1.95, 2.05, 2.0, 2.02], n_boot=300)
    assert "no power-law trend" in flat.degenerate and "includes 0" in flat.degenerate
    assert "2 distinct x" in fit_power_law([10, 100], [1.0, 0.5]).degenerate
    good = fit_power_law(x, (BETA * x) ** ALPHA)
    assert good.degenerate is None
    pure = fit_saturating(x, (BETA * x) ** ALPHA)  # no floor: E ends on its bound 0
    assert "E =" in pure.degenerate and "no floor" in pure.degenerate
    assert fit_saturating(x, 0.5 + (1e3 / x) ** 0.3).degenerate is None
    assert good.to_dict()["degenerate"] is None and pure.to_dict()["degenerate"] == pure.degenerate


def _lines_of(fig, fit) -> list:
    """The drawn lines that trace ``fit``'s law."""
    found = []
    for ax in fig.axes:
        for line in ax.get_lines():
            xs, ys = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
            with np.errstate(all="ignore"):  # a degenerate law may overflow where it is not drawn
                if len(xs) > 10 and np.allclose(ys, fit.predict(xs), rtol=1e-9):
                    found.append(line)
    return found


def test_degenerate_fits_are_not_drawn_and_named_in_the_legend():
    rows = seeded_rows("var") + [{**r, "paradigm": "ar", "val_loss": 2.0 + 0.01 * ((r["seed"] + r["depth"]) % 3)}
                                 for r in seeded_rows("ar")]
    rows = [{**r, "fid": r["val_loss"] * 30} for r in rows]
    for metric, make in (("val_loss", figure_panels), ("fid", figure_shared)):
        fits = fit_groups(rows, metric, "params", point_keys=SCALING_POINT_KEYS, saturating=True, n_boot=200)
        assert fits["ar"]["power_law"].degenerate and not fits["var"]["power_law"].degenerate
        assert fits["var"]["saturating"].degenerate  # a pure power law has no floor
        fig = make(rows, PlotSpec("x", metric, "params"), fits, "test", SCALING_POINT_KEYS)
        fig.canvas.draw()
        assert _lines_of(fig, fits["var"]["power_law"])  # the law is drawn ...
        for bad in (fits["ar"]["power_law"], fits["var"]["saturating"]):
            assert not _lines_of(fig, bad)  # ... the degenerate ones are not
        legend = " ".join(t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts())
        assert "not drawn" in legend and "no power-law trend" in legend


# ------------------------------------------------------------------------------------------ labels
def _texts(fig) -> list[str]:
    from matplotlib.text import Text

    fig.canvas.draw()
    return [t.get_text() for t in fig.findobj(Text) if t.get_text() and t.get_visible()]


def test_plot_labels_are_metric_aware_and_readable():
    rows = seeded_rows("var") + seeded_rows("mar", alpha=-0.1, rng_seed=1)
    for r in rows:
        r.update(fid=50 * (r["params"] / 1e5) ** -0.5, val_loss_best=r["val_loss"],
                 params_non_embedding=r["params"], flops_train_total=r["params"] * 1e6)
    fit = fit_power_law([1e5, 1e6, 1e7], [100.0, 30.0, 9.5])
    assert equation_label(fit, "fid", "flops_train_total").startswith(r"$\mathrm{FID}=(")
    assert r"\,C)" in equation_label(fit, "fid", "flops_train_total")
    assert equation_label(fit, "val_loss_best", "params_non_embedding").startswith(r"$\mathrm{loss}=(")
    assert "FID" in fit_label("var", fit, "fid", "params") and "L=" not in fit_label("var", fit, "fid", "params")
    raw = ("val_loss_best", "params_non_embedding", "flops_train_total", "fid vs", "sample_s_per_image")
    for metric, x, make in (("fid", "flops_train_total", figure_shared),
                            ("val_loss_best", "params_non_embedding", figure_panels)):
        fits = fit_groups(rows, metric, x, point_keys=SCALING_POINT_KEYS, n_boot=200)
        fig = make(rows, PlotSpec("p", metric, x), fits, "mnist5k", SCALING_POINT_KEYS)
        texts = _texts(fig)
        joined = "\n".join(texts)
        assert not any(word in joined for word in raw), joined
        assert "L=" not in joined.replace(" ", "") and r"\times10^{0}" not in joined
        symbol = r"\mathrm{FID}=" if metric == "fid" else r"\mathrm{loss}="
        assert symbol in joined and r"\alpha=" in joined and "5 seeds" in joined
        assert "std over seeds" in joined  # several seeds: points are means with error bars
        assert any(len(ax.containers) for ax in fig.axes)  # the error bars
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:  # legends sit outside their axes, so never over a line
            if ax.get_legend():
                box, area = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
                assert box.y1 <= area.y0 + 1, ax.get_title()
        if make is figure_panels:
            titles = [ax.get_title() for ax in fig.axes]
            assert "VAR" in titles and "MAR" in titles and any("divided by" in t for t in titles)


# ------------------------------------------------------------------------------- compare exponents
def test_compare_exponents_says_differ_and_overlap():
    rows = (seeded_rows("var", alpha=-0.30) + seeded_rows("ar", alpha=-0.10, rng_seed=1)
            + seeded_rows("maskgit", alpha=-0.30, rng_seed=2))
    fits = fit_groups(rows, "val_loss", "params", point_keys=SCALING_POINT_KEYS, n_boot=300)
    verdict = {(p["a"], p["b"]): p["verdict"] for p in compare_exponents(fits)}
    assert verdict == {("var", "ar"): "differ", ("var", "maskgit"): "overlap", ("ar", "maskgit"): "differ"}
    two_points = fit_groups([r for r in rows if r["depth"] <= 2 and r["seed"] == 0], "val_loss", "params")
    assert {p["verdict"] for p in compare_exponents(two_points)} == {"n/a"}  # no intervals


# ------------------------------------------------------------------------------------ --points CLI
def seeded_sweep(root: Path) -> None:
    """var (alpha -0.3) and ar (alpha -0.1), 4 depths x 3 seeds, FID on both; mar flat (degenerate)."""
    for paradigm, alpha in (("var", -0.3), ("ar", -0.1), ("mar", 0.0)):
        for r in seeded_rows(paradigm, alpha=alpha, slopes=(-0.01, 0.0, 0.01), noise=0.01):
            loss = r["val_loss"] if alpha else 0.27 + 0.002 * r["seed"] - 0.001 * r["depth"] % 2
            fake_run(root, f"{paradigm}/d{r['depth']}s{r['seed']}", paradigm=paradigm, depth=r["depth"], steps=200,
                     sweep="paradigms", seed=r["seed"], val_loss_best=loss, fid=loss * 30,
                     sample_s_per_image=0.01 * r["depth"])


def test_points_cli_end_to_end(tmp_path, capsys, monkeypatch):
    seeded_sweep(tmp_path / "runs")
    first, again = tmp_path / "first", tmp_path / "again"
    scaling_main(["--runs", str(tmp_path / "runs"), "--out", str(first), "--bootstrap", "200", "--no-plots"])
    capsys.readouterr()
    for key in [k for k in os.environ if k.startswith("WANDB_")]:  # the re-plot logs to W&B: offline, no key
        monkeypatch.delenv(key)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path))
    # the committed-study case: only a points.csv is there, and --runs says what to pass instead
    with pytest.raises(SystemExit):
        scaling_main(["--runs", str(first)])
    err = capsys.readouterr().err
    assert "no run (metrics.json)" in err and f"--points {first / 'points.csv'}" in err

    scaling_main(["--points", str(first / "points.csv"), "--out", str(again), "--bootstrap", "200",
                  "--compare-exponents", "--wandb", "--wandb-group", "study"])
    printed = capsys.readouterr().out
    assert "W&B: logged the fits, points and 5 plot(s) to run" in printed
    assert "36 finished generator run(s)" in printed and "3 seeds (0, 1, 2)" in printed
    assert "var vs ar" in printed and "differ" in printed and "DEGENERATE" in printed
    a, b = (json.loads((d / "fits.json").read_text()) for d in (first, again))
    fa, fb = (r["fits"]["var"]["val_loss_best"]["params_non_embedding"]["power_law"] for r in (a, b))
    assert fa["alpha"] == fb["alpha"] and fa["ci"] == fb["ci"]  # the same fit from the points as from the runs
    assert (fb["n"], fb["points"], fb["seeds"], fb["ci"]["method"]) == (12, 4, {"min": 3, "max": 3}, "seeds")
    assert fb["equation"].startswith("loss = (")
    assert b["fits"]["var"]["fid"]["flops_train_total"]["power_law"]["equation"].startswith("FID = (")
    mar = b["fits"]["mar"]["val_loss_best"]["params_non_embedding"]["power_law"]
    assert mar["degenerate"] and any(f["paradigm"] == "mar" and f["fitted"] for f in b["flagged"])
    assert "mar" in (again / "fits.md").read_text() and "no power-law trend" in (again / "fits.md").read_text()
    exps = json.loads((again / "exponents.json").read_text())["comparisons"][0]
    assert exps["metric"] == "val_loss_best" and exps["x"] == "params_non_embedding"
    assert {(p["a"], p["b"]): p["verdict"] for p in exps["pairs"]}[("var", "ar")] == "differ"
    assert "**differ**" in (again / "exponents.md").read_text()
    for name in ("loss_vs_params", "loss_vs_compute", "token_error_vs_compute", "fid_vs_compute",
                 "fid_vs_sampling_time"):
        for ext in ("png", "pdf"):
            assert (again / f"{name}.{ext}").stat().st_size > 1000, f"{name}.{ext}"
    # --wandb: a run "scaling" of the study's group with the fits and points tables and every plot
    [run] = read_runs(again)
    assert run.finished and (run.group, run.name, run.job_type) == ("study", "scaling", "scaling")
    assert run.tags == ["scaling", "mnist5k", "paradigms"]
    columns, rows = read_table(run, "fits")
    var = {(r[1], r[2], r[3]): dict(zip(columns, r)) for r in rows if r[0] == "var"}
    assert var["val_loss_best", "params_non_embedding", "power_law"]["alpha"] == fb["alpha"]
    assert var["val_loss_best", "params_non_embedding", "power_law"]["seeds"] == "3"
    assert len(rows) == sum(len(kinds) for per_x in b["fits"].values() for m in per_x.values() for kinds in m.values())
    columns, rows = read_table(run, "points")
    assert len(rows) == 36 and {"paradigm", "seed", "val_loss_best", "fid"} <= set(columns)
    for name in ("loss_vs_params", "fid_vs_compute"):
        assert logged_image(run, f"plots/{name}").stat().st_size > 1000
    # without --out the re-plot lands next to its points.csv
    scaling_main(["--points", str(again), "--bootstrap", "50", "--no-plots"])
    assert "wrote points.csv" in capsys.readouterr().out and (again / "fits.md").is_file()
    for argv, message in [(["--points", str(again), "--runs", str(first)], "not both"),
                          (["--points", str(again), "--source", "wandb", "--project", "p"], "--source local")]:
        with pytest.raises(SystemExit):
            scaling_main(argv)
        assert message in capsys.readouterr().err


def test_wandb_group_cli_with_seeds(tmp_path, monkeypatch, capsys):
    """--source wandb reads a group's run summaries (the W&B API faked) and fits its seeds together."""
    import wandb

    runs = [FakeRun({"task": "generator", "status": "finished", "sweep": "paradigms", "steps": 200, "batch_size": 32,
                     **{k: v for k, v in r.items() if k != "params"}, "params_non_embedding": r["params"],
                     "val_loss_best": r["val_loss"]}, rid=f"r{i}")
            for i, r in enumerate(seeded_rows("var", slopes=(-0.01, 0.0, 0.01)))]
    api = FakeApi(runs)
    monkeypatch.setattr(wandb, "Api", lambda timeout=30: api)
    scaling_main(["--source", "wandb", "--project", "genarena", "--group", "paradigms", "--out", str(tmp_path),
                  "--bootstrap", "100", "--no-plots"])
    assert api.calls == [("genarena", {"group": "paradigms"})]
    assert "12 finished generator run(s) from wandb:genarena group=paradigms" in capsys.readouterr().out
    fit = json.loads((tmp_path / "fits.json").read_text())["fits"]["var"]["val_loss_best"]["params_non_embedding"]
    assert fit["power_law"]["n"] == 12 and fit["power_law"]["ci"]["method"] == "seeds"


def test_committed_study_replots_from_its_points():
    """experiments/scaling/paradigms_mnist5k/points.csv re-fits to the exponents its README reports."""
    study = Path(__file__).resolve().parents[1] / "experiments" / "scaling" / "paradigms_mnist5k"
    runs = read_points([study / "points.csv"]).runs
    assert len(runs) == 16
    fits = fit_groups(runs, "val_loss_best", "params_non_embedding", point_keys=SCALING_POINT_KEYS, n_boot=0)
    alphas = {p: round(f["power_law"].alpha, 3) for p, f in fits.items()}
    assert alphas == {"var": -0.06, "ar": -0.072, "maskgit": -0.024, "mar": -0.025}


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
