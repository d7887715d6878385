"""W&B as the comparison surface, asserted on the offline run files W&B writes (read by tests/wandb_files.py):
a training run's group, name, tags, job type, config and monotonic history; an evaluation logged into the run
it evaluates; checkpoints as an artifact. genarena-compare's group (its runs, their evaluations, the report's
table and figures) is asserted in tests/test_compare.py, genarena-scaling's tables and plots in
tests/test_scaling.py. Everything runs offline, without an API key."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest

import genarena
from genarena.cli import evaluate, train
from genarena.cli.scaling import main as scaling_main
from genarena.errors import ConfigError
from genarena.lit.wandb_logging import run_name, run_tags
from genarena.lit.wandb_results import log_study

from .conftest import compose_cfg, tiny_generator_overrides, tiny_tokenizer_overrides
from .test_metrics import DATA, TINY_CLASSIFIER_FLOOR, eval_config
from .wandb_files import WandbRun, logged_image, payloads, read_runs

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.num_threads=1"]
EVAL = ["eval.num_samples=20", "eval.batch_size=20", "eval.extractor=domain", "eval.metrics=[fid,prc]",
        TINY_CLASSIFIER_FLOOR]
EVAL_HISTORY = {"eval/fid", "eval/precision", "eval/recall", "eval/class_acc", "eval/sample_s_per_image",
                "trainer/global_step", "flops_train_total"}
STUDY = Path(__file__).resolve().parents[1] / "experiments" / "scaling" / "paradigms_mnist5k"


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """W&B offline without a key (no WANDB_* settings, HOME without ~/.netrc), private runs/ and cache dirs."""
    root = tmp_path_factory.mktemp("wandb")
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("WANDB_")]:
            mp.delenv(key)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("HOME", str(root))
        mp.setenv("GENARENA_RUNS_DIR", str(root / "runs"))
        mp.setenv("GENARENA_CACHE_DIR", str(root / "cache"))
        mp.chdir(root)
        yield root, mp


def run_command(mp: pytest.MonkeyPatch, main, prog: str, *argv: str) -> None:
    mp.setattr(sys, "argv", [prog, *argv])
    main()


@pytest.fixture(scope="module")
def evaluated(offline):
    """A tiny raster AR trained by genarena-train with logger=wandb (seed given, periodic FID, log_model), then
    evaluated twice: by genarena.evaluate and by genarena-eval."""
    root, mp = offline
    eval_config()  # the tiny domain classifier, in the cache
    tok_dir = root / "tokenizer"
    genarena.train(compose_cfg(["task=tokenizer", *tiny_tokenizer_overrides("vq"), *DATA, *QUIET,
                                "trainer.max_steps=2", "logger=none"]), run_dir=tok_dir)
    run_command(mp, train.main, "genarena-train", "task=generator", *tiny_generator_overrides("ar"),
                f"tokenizer.ckpt={tok_dir}", *DATA, *QUIET, "trainer.max_steps=4", "trainer.val_check_interval=2",
                "trainer.limit_val_batches=2", "trainer.log_every_n_steps=1", "log.sample_every_n_steps=2",
                "log.grid_size=10", "eval.every_n_steps=2", "eval.periodic_num_samples=20", "eval.extractor=domain",
                "eval.batch_size=20", TINY_CLASSIFIER_FLOOR, "logger=wandb", "logger.log_model=true", "seed=1")
    [run_dir] = (root / "runs" / "generator_ar_mnist5k").iterdir()
    trained = json.loads((run_dir / "metrics.json").read_text())
    first = genarena.evaluate(run_dir, overrides=EVAL)
    run_command(mp, evaluate.main, "genarena-eval", f"ckpt={run_dir}", *EVAL, "eval.seed=1")
    second = json.loads((run_dir / "metrics.json").read_text())
    return run_dir, trained, first, second, read_runs(run_dir)


def test_training_run_identity_config_and_axes(evaluated):
    run_dir, trained, _, _, files = evaluated
    run = files[0]
    assert all(f.finished for f in files)
    assert (run.group, run.name, run.job_type) == ("generator_ar_mnist5k", "ar-d1-s1", "generator")
    assert run.tags == ["generator", "mnist5k", "ar", "vq", "d1"]
    config = run.config_values
    assert config["generator"]["name"] == "ar" and config["seed"] == 1 and config["logger"]["log_model"] is True
    assert config["data"]["resolution"] == 16
    assert run.metrics["*"]["step_metric"] == "trainer/global_step"
    for key in ("fid", "class_acc", "sample_s_per_image"):  # evaluation results chart against training compute
        assert run.metrics[f"eval/{key}"]["step_metric"] == "flops_train_total"
        assert run.metrics[f"eval/{key}"]["summary"] == ["none"]  # the summary has them once, as fid, class_acc...
    assert run.summary["params"] == trained["params"] and run.summary["flops_train_total"] == trained[
        "flops_train_total"]


def test_training_history_is_monotonic_without_a_duplicated_last_point(evaluated):
    _, trained, _, _, files = evaluated
    history = files[0].history
    assert [r["_step"] for r in history] == list(range(len(history)))
    steps = [r["trainer/global_step"] for r in history]
    assert steps == sorted(steps) and steps[-1] == trained["steps"] == 4
    # validation after steps 2 and 4 only: the final trainer.validate() after fit does not log step 4 again
    assert [r["trainer/global_step"] for r in history if "val/loss" in r] == [2, 4]
    assert files[0].values("val/loss")[-1] == pytest.approx(trained["val_loss"])
    assert [r["trainer/global_step"] for r in history if "eval/fid" in r] == [2, 4]  # periodic FID
    assert [r["trainer/global_step"] for r in history if "train/loss" in r] == [1, 2, 3, 4]
    assert [r["trainer/global_step"] for r in history if "images/samples/_type" in r] == [2, 4]
    per_step = trained["flops_train_total"] / trained["steps"]  # every row carries the training compute so far
    assert all(r["flops_train_total"] == pytest.approx(per_step * r["trainer/global_step"]) for r in history)


def test_evaluations_are_logged_into_the_run_they_evaluate(evaluated):
    run_dir, trained, first, second, files = evaluated
    training, *evaluations = files
    assert len(evaluations) == 2, "one file per evaluation, each continuing the training run"
    assert {f.run_id for f in files} == {training.run_id}
    last = training.history[-1]["_step"]
    for i, (run, scores) in enumerate(zip(evaluations, (first, second))):
        assert (run.group, run.name, run.tags, run.job_type) == (training.group, training.name, training.tags,
                                                                 training.job_type)
        [row] = run.history
        assert row["_step"] == last + 1 + i, "on the run's step axis, after its training"
        assert row["trainer/global_step"] == trained["steps"]
        assert row["flops_train_total"] == trained["flops_train_total"]
        assert row["eval/fid"] == pytest.approx(scores["fid"]) and row["eval/class_acc"] == scores["class_acc"]
        assert {k for k in row if not k.startswith(("_", "images/eval_samples/"))} == EVAL_HISTORY
        assert logged_image(run, "images/eval_samples").stat().st_size > 100  # the sample grid
        # constants (N, seed, extractor, sampling options...) and the results by name are in the summary, once
        assert run.summary["eval_n"] == 20 and run.summary["eval_extractor"] == "domain"
        assert run.summary["eval_seed"] == i and run.summary["fid"] == pytest.approx(scores["fid"])
        assert [k for k in run.summary if "class_acc" in k] == ["class_acc"]
    assert second["eval_seed"] == 1 and json.loads((run_dir / "wandb" / "genarena-run.json").read_text())[
        "next_step"] == last + 3


def test_checkpoints_are_a_model_artifact_with_log_model(evaluated):
    _, trained, _, _, files = evaluated
    [artifact] = files[0].artifacts
    assert artifact["name"] == f"model-{files[0].run_id}" and artifact["type"] == "model"
    assert sorted(artifact["files"]) == ["best.ckpt", "config.yaml", "last.ckpt"]
    assert sorted(artifact["aliases"]) == ["latest", f"step{trained['steps']}"]


def test_names_tags_and_log_model_option():
    gen = compose_cfg(["task=generator", "generator=var", "generator.depth=4", "logger=wandb"])
    assert run_name(gen) == "var-d4" and run_name(gen, with_seed=True) == "var-d4-s0"
    assert run_tags(gen) == ["generator", "mnist5k", "var", "msvq", "d4"]
    tok = compose_cfg(["task=tokenizer", "tokenizer=kl", "logger=wandb", "logger.tags=[study1]"])
    assert run_name(tok) == "kl" and run_tags(tok) == ["tokenizer", "mnist5k", "kl", "study1"]
    compute = compose_cfg(["+sweep=compute", "generator.depth=2", "trainer.max_steps=100"])
    assert run_name(compute) == "var-d2-100steps" and "compute" in run_tags(compute)
    assert run_name(compose_cfg(["task=generator", "logger.run_name=mine"]), with_seed=True) == "mine-s0"
    with pytest.raises(ConfigError, match="logger.log_model=true .* but logger=csv"):
        genarena.train(compose_cfg(["task=tokenizer", "logger.log_model=true"]))


def test_scaling_wandb_options_need_wandb(capsys):
    with pytest.raises(SystemExit):
        scaling_main(["--points", str(STUDY / "points.csv"), "--wandb-group", "g"])
    assert "--wandb-group: these say where --wandb logs; add --wandb" in capsys.readouterr().err


def test_wandb_failing_is_one_warning_never_an_error(offline, tmp_path, monkeypatch, caplog):
    import wandb

    def broken(**kwargs):
        raise RuntimeError("no wandb here")

    monkeypatch.setattr(wandb, "init", broken)
    with caplog.at_level(logging.WARNING):
        assert log_study("offline", project="p", entity=None, group="g", name="report", job_type="compare",
                         tags=[], config={}, directory=tmp_path, tables={"t": (["a"], [[1]])}) is None
    assert [r.getMessage() for r in caplog.records] == [
        "could not start the W&B run 'report' in offline mode (RuntimeError: no wandb here)"]


def test_run_file_reader_joins_records_across_blocks_and_checks_sums(offline, tmp_path):
    """A value larger than a 32 KiB block is split into FIRST / MIDDLE / LAST records; the reader joins them."""
    import wandb

    big = "x" * 80_000
    run = wandb.init(mode="offline", dir=str(tmp_path), project="p", config={"big": big})
    run.log({"a": 1})
    run.finish()
    [path] = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    [read] = read_runs(tmp_path)
    assert read.finished and read.config_values["big"] == big and read.values("a") == [1] and read.run_id == run.id
    assert WandbRun.read(path).run_id == run.id
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # inside the first record's payload
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        list(payloads(path))
