"""Bad inputs and faults, as a user meets them: each case exits non-zero with one clear message that names the bad
value, prints no traceback, and changes nothing already on disk (finished runs, caches); a run that stops before
its first training step leaves no directory. Plus the pieces behind them: the non-finite guard, safe loading, the
domain classifier's accuracy floor, the W&B start-up timeout.

One tiny tokenizer and generator (and one diverged generator) are trained once for the whole file; the commands run
in this process (their ``main()`` with ``sys.argv``) except where only a separate process shows the behaviour."""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import subprocess
import sys
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import genarena
from genarena.checkpoints import load_file, read_checkpoint
from genarena.cli import evaluate as eval_cli
from genarena.cli import sample as sample_cli
from genarena.cli import scaling as scaling_cli
from genarena.cli import train as train_cli
from genarena.config import TRAINER_PRECISIONS
from genarena.errors import CheckpointError, ConfigError, NonFiniteError
from genarena.lit.guard import check_grad_norm, check_losses, check_weights
from genarena.metrics.classifier import DomainClassifier, classifier_cache_path, save_classifier
from genarena.tokenizers import load_tokenizer
from genarena.training import run_training

from .conftest import compose_cfg, tiny_generator_overrides, tiny_tokenizer_overrides

FAST = ["trainer.max_steps=2", "trainer.val_check_interval=1", "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "log.sample_every_n_steps=0",
        "logger=none"]
TINY_VQ = ["task=tokenizer", *tiny_tokenizer_overrides("vq")]
TINY_AR = ["task=generator", *tiny_generator_overrides("ar")]
# NaN within a few steps (step 1 on a 2-core CPU), with a periodic checkpoint every step before it
DIVERGE = ["optim.lr=1e6", "trainer.max_steps=30", "trainer.val_check_interval=30", "log.checkpoint_every_n_steps=1"]


class Payload:
    """A pickle that creates ``marker`` when it is unpickled with full unpickling (what must never happen)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def snapshot(*roots: Path) -> dict[str, tuple[int, int] | None]:
    """Every file below ``roots``: path -> (size, mtime in ns); every folder: path -> None."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
            for root in roots if root.exists() for p in sorted(root.rglob("*"))}


def png(path: Path, value: int | None = 128, fmt: str = "PNG") -> Path:
    """A 32 px grayscale image file (``value=None``: noise, which JPEG cannot compress to almost nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.random.default_rng(0).integers(0, 256, (32, 32)) if value is None
              else np.full((32, 32), value)).astype(np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    """Finished tiny runs (vq tokenizer, raster AR generator), a diverged generator run, a weak cached domain
    classifier, and the bad files the cases feed to the commands."""
    base = tmp_path_factory.mktemp("bad_inputs")
    runs, cache = base / "runs", base / "cache"
    paths = [f"paths.runs_dir={runs}", f"paths.cache_dir={cache}"]
    tok = Path(run_training(compose_cfg([*TINY_VQ, *FAST, *paths]))["run_dir"])
    gen = Path(run_training(compose_cfg([*TINY_AR, f"tokenizer.ckpt={tok}", *FAST, *paths]))["run_dir"])
    with pytest.raises(NonFiniteError, match="diverged at step"):
        run_training(compose_cfg([*TINY_AR, f"tokenizer.ckpt={tok}", *FAST, *DIVERGE, *paths]))
    failed = next(r for r in (runs / "generator_ar_mnist5k").iterdir()
                  if json.loads((r / "metrics.json").read_text())["status"] == "failed")
    failed_ckpt = min((failed / "checkpoints").glob("step*.ckpt"))  # a periodic one, from before the divergence

    bad = base / "bad"
    bad.mkdir()
    marker = base / "PAYLOAD_RAN"
    ckpt = torch.load(tok / "checkpoints" / "last.ckpt", weights_only=True)
    torch.save({**ckpt, "payload": Payload(marker)}, bad / "payload.ckpt")
    with open(bad / "payload_raw.ckpt", "wb") as f:  # a plain pickle (no zip), as old torch.save wrote
        pickle.dump({**ckpt, "payload": Payload(marker)}, f, protocol=2)
    torch.save({**ckpt, "args": argparse.Namespace(lr=1.0)}, bad / "namespace.ckpt")  # a trusted old file
    (bad / "garbage.ckpt").write_bytes(b"this is not a checkpoint")
    whole = (gen / "checkpoints" / "last.ckpt").read_bytes()
    (bad / "truncated.ckpt").write_bytes(whole[: len(whole) // 2])

    images = np.full((10, 32, 32, 1), 128, dtype=np.uint8)
    np.savez(bad / "ok.npz", images=images, labels=np.arange(10))
    (bad / "garbage.npz").write_bytes(b"not a zip archive")
    (bad / "truncated.npz").write_bytes((bad / "ok.npz").read_bytes()[:300])
    np.savez(bad / "float.npz", images=images.astype(np.float32))
    np.savez(bad / "object.npz", images=np.array([{"a": 1}], dtype=object))
    png(bad / "pngs" / "0.png")
    (bad / "pngs" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    png(bad / "jpgs" / "0.jpg", fmt="JPEG")
    whole = png(bad / "jpgs" / "1.jpg", value=None, fmt="JPEG").read_bytes()
    (bad / "jpgs" / "1.jpg").write_bytes(whole[: len(whole) // 2])

    folders = base / "folders"
    png(folders / "noval" / "train" / "a" / "0.png")
    for split, classes in (("train", "ab"), ("val", "ac")):
        for c in classes:
            png(folders / "mismatch" / split / c / "0.png")
    for split in ("train", "val"):
        for c in "ab":
            png(folders / "corrupt" / split / c / "0.png")
    (folders / "corrupt" / "train" / "a" / "1.png").write_bytes(b"not an image")

    weak = compose_cfg(["data=mnist5k", f"paths.cache_dir={cache}"])
    save_classifier(DomainClassifier(1, 10, 4, 8), classifier_cache_path(cache, weak.data, weak.classifier),
                    {"channels": 1, "num_classes": 10, "ch": 4, "feature_dim": 8, "val_acc": 0.125})
    return SimpleNamespace(base=base, runs=runs, cache=cache, paths=paths, tok=tok, gen=gen, failed=failed,
                           failed_ckpt=failed_ckpt, bad=bad, folders=folders, marker=marker)


@dataclass
class Case:
    """One bad input: ``args(world)`` for ``command``; the message must contain each of ``needles(world)``."""

    name: str
    command: str  # train | sample | eval | scaling | api | subprocess-train
    args: Callable[[SimpleNamespace], list[str]]
    needles: Callable[[SimpleNamespace], list[str]]
    leaves_failed_run: bool = False  # the run started training, so its directory stays with status failed


def train(*extra: str) -> Callable[[SimpleNamespace], list[str]]:
    """genarena-train arguments: a tiny tokenizer job (``generator`` jobs name their tokenizer in ``extra``)."""
    return lambda w: [*FAST, *w.paths, *(TINY_VQ if not any(a.startswith("task=") for a in extra) else []),
                      *[a.format(w=w) for a in extra]]


def gen(*extra: str) -> Callable[[SimpleNamespace], list[str]]:
    return lambda w: [*FAST, *w.paths, *TINY_AR, f"tokenizer.ckpt={w.tok}", *[a.format(w=w) for a in extra]]


def fmt(*parts: str) -> Callable[[SimpleNamespace], list[str]]:
    return lambda w: [p.format(w=w) for p in parts]


EVAL = ["data=mnist5k", "eval.extractor=domain"]

CASES = [
    # ------------------------------------------------------------------ genarena-train: values and keys
    Case("depth 0", "train", gen("generator.depth=0"), fmt("generator.depth=0")),
    Case("depth negative", "train", gen("generator.depth=-2"), fmt("generator.depth=-2")),
    Case("width not divisible by heads", "train", gen("generator.width=33"), fmt("generator.width=33")),
    Case("batch size 0", "train", train("data.batch_size=0"), fmt("data.batch_size=0")),
    Case("val fraction 1.5", "train", train("data.val_fraction=1.5"), fmt("data.val_fraction=1.5")),
    Case("negative lr", "train", train("optim.lr=-1"), fmt("optim.lr=-1")),
    Case("beta above 1", "train", train("optim.betas=[0.9,1.5]"), fmt("optim.betas=[0.9, 1.5]")),
    Case("val_check_interval 0", "train", train("trainer.val_check_interval=0"), fmt("trainer.val_check_interval=0")),
    Case("precision foo", "train", train("trainer.precision=foo"), fmt("trainer.precision='foo'", "bf16-mixed")),
    Case("max_steps -1 (forever at lr 0)", "train", train("trainer.max_steps=-1"), fmt("trainer.max_steps=-1")),
    Case("max_steps 0 (would report finished)", "train", train("trainer.max_steps=0"), fmt("trainer.max_steps=0")),
    Case("max_time garbage", "train", train("trainer.max_time=forever"), fmt("trainer.max_time='forever'")),
    Case("seed -1 (Lightning would seed 0)", "train", train("seed=-1"), fmt("seed=-1")),
    Case("negative temperature", "train", gen("generator.sampling.temperature=-1"),
         fmt("generator.sampling.temperature=-1.0")),
    Case("+foo=1", "train", train("+foo=1"), fmt("foo is not a config key")),
    Case("+data.foo=1", "train", train("+data.foo=1"), fmt("data.foo is not a config key")),
    Case("+trainer typo", "train", train("+trainer.accumulate_grad_batchs=4"), fmt("trainer.accumulate_grad_batchs")),
    Case("unknown key", "train", train("data.resolutoin=64"), fmt("resolutoin")),
    Case("unknown option", "train", train("tokenizer=vqgan"), fmt("vqgan")),
    Case("unknown logger mode", "train", train("logger=wandb", "logger.mode=bogus"), fmt("logger.mode='bogus'")),
    # ------------------------------------------------------------------ genarena-train: paths
    Case("experiment_name escapes runs/", "train", train("experiment_name=../../escape"),
         fmt("experiment_name='../../escape'")),
    Case("sweep_name escapes runs/", "train", train("sweep_name=../up"), fmt("sweep_name='../up'")),
    Case("runs dir not writable", "train", train("paths.runs_dir=/proc/genarena"),
         fmt("paths.runs_dir=/proc/genarena")),
    Case("run dir of another config", "train", gen("hydra.run.dir={w.gen}", "seed=1"),
         fmt("{w.gen}", "already holds a run of another config")),
    # ------------------------------------------------------------------ genarena-train: data
    Case("imagefolder root missing", "train",
         train("data=imagefolder", "data.root={w.folders}/missing", "data.resolution=32", "data.channels=1"),
         fmt("{w.folders}/missing")),
    Case("imagefolder without val", "train",
         train("data=imagefolder", "data.root={w.folders}/noval", "data.resolution=32", "data.channels=1"),
         fmt("{w.folders}/noval/val", "no class folders")),
    Case("imagefolder classes differ", "train",
         train("data=imagefolder", "data.root={w.folders}/mismatch", "data.resolution=32", "data.channels=1",
               "data.num_workers=0"), fmt("class folders differ")),
    Case("imagefolder corrupt image", "train",
         train("data=imagefolder", "data.root={w.folders}/corrupt", "data.resolution=32", "data.channels=1",
               "data.num_workers=0", "data.batch_size=3"), fmt("{w.folders}/corrupt/train/a/1.png", "not a readable")),
    # ------------------------------------------------------------------ genarena-train: checkpoints
    Case("generator without tokenizer", "train", train("task=generator", *tiny_generator_overrides("ar")),
         fmt("tokenizer.ckpt")),
    Case("tokenizer.ckpt missing", "train", train("task=generator", "tokenizer.ckpt={w.bad}/none.ckpt"),
         fmt("{w.bad}/none.ckpt", "does not exist")),
    Case("tokenizer.ckpt garbage", "train", train("task=generator", "tokenizer.ckpt={w.bad}/garbage.ckpt"),
         fmt("{w.bad}/garbage.ckpt", "corrupt")),
    Case("tokenizer.ckpt truncated", "train", train("task=generator", "tokenizer.ckpt={w.bad}/truncated.ckpt"),
         fmt("{w.bad}/truncated.ckpt", "corrupt")),
    Case("tokenizer.ckpt wrong role", "train", train("task=generator", "tokenizer.ckpt={w.gen}"),
         fmt("holds a 'generator'", "'tokenizer' checkpoint is needed")),
    Case("tokenizer of the wrong kind", "train", train("task=generator", "generator=var", "tokenizer.ckpt={w.tok}"),
         fmt("needs a multiscale tokenizer")),
    Case("tokenizer.ckpt=auto, none of that kind", "train", train("task=generator", "generator=mar",
                                                                   "tokenizer.ckpt=auto"), fmt("no finished 'kl'")),
    Case("tokenizer.ckpt of a failed run", "train", train("task=generator", "tokenizer.ckpt={w.failed}"),
         fmt("{w.failed} failed", "NonFiniteError")),
    Case("tokenizer.ckpt payload (zip)", "train", train("task=generator", "tokenizer.ckpt={w.bad}/payload.ckpt"),
         fmt("{w.bad}/payload.ckpt needs unsafe loading", "allow_unsafe_load=true")),
    Case("tokenizer.ckpt payload (plain pickle)", "train",
         train("task=generator", "tokenizer.ckpt={w.bad}/payload_raw.ckpt"), fmt("{w.bad}/payload_raw.ckpt")),
    Case("tokenizer.ckpt pickles a class", "train", train("task=generator", "tokenizer.ckpt={w.bad}/namespace.ckpt"),
         fmt("argparse.Namespace", "allow_unsafe_load=true")),
    Case("resume payload", "train", train("resume={w.bad}/payload.ckpt"), fmt("resume checkpoint", "unsafe")),
    # ------------------------------------------------------------------ genarena-train: divergence
    Case("tokenizer diverges (manual optimisation)", "train", train(*DIVERGE),
         fmt("diverged at step", "non-finite loss", "train/loss = nan"), leaves_failed_run=True),
    Case("classifier diverges", "train",
         train("task=classifier", "classifier.ch=4", "classifier.feature_dim=8", "classifier.lr=1e6",
               "classifier.batch_size=32", "trainer.max_steps=30", "trainer.val_check_interval=30"),
         fmt("diverged at step", "non-finite"), leaves_failed_run=True),
    # ------------------------------------------------------------------ genarena-sample
    Case("sample n=0", "sample", fmt("ckpt={w.gen}", "n=0"), fmt("n=0")),
    Case("sample batch_size 0", "sample", fmt("ckpt={w.gen}", "batch_size=0"), fmt("batch_size=0")),
    Case("sample negative temperature", "sample", fmt("ckpt={w.gen}", "sampling.temperature=-1"),
         fmt("sampling.temperature=-1.0")),
    Case("sample top_p 2", "sample", fmt("ckpt={w.gen}", "sampling.top_p=2"), fmt("sampling.top_p=2.0")),
    Case("sample out not writable", "sample", fmt("ckpt={w.gen}", "out=/proc/genarena"), fmt("out=/proc/genarena")),
    Case("sample label out of range", "sample", fmt("ckpt={w.gen}", "labels=[99]"), fmt("labels=[99]")),
    Case("sample +foo", "sample", fmt("ckpt={w.gen}", "+foo=1"), fmt("foo is not a config key")),
    Case("sample a failed run", "sample", fmt("ckpt={w.failed}"), fmt("{w.failed} failed", "diverged at step")),
    Case("sample a checkpoint of a failed run", "sample", fmt("ckpt={w.failed_ckpt}"),
         fmt("{w.failed} failed")),
    Case("sample a tokenizer", "sample", fmt("ckpt={w.tok}"), fmt("holds a 'tokenizer'")),
    Case("sample a payload", "sample", fmt("ckpt={w.bad}/payload.ckpt"), fmt("needs unsafe loading")),
    # ------------------------------------------------------------------ genarena-eval
    Case("eval corrupt PNG", "eval", fmt("images={w.bad}/pngs", *EVAL), fmt("{w.bad}/pngs/1.png", "not a readable")),
    Case("eval truncated JPEG", "eval", fmt("images={w.bad}/jpgs", *EVAL), fmt("{w.bad}/jpgs/1.jpg", "not a readable")),
    Case("eval garbage npz", "eval", fmt("images={w.bad}/garbage.npz", *EVAL),
         fmt("{w.bad}/garbage.npz is not a readable .npz")),
    Case("eval truncated npz", "eval", fmt("images={w.bad}/truncated.npz", *EVAL),
         fmt("{w.bad}/truncated.npz is not a readable .npz")),
    Case("eval npz of objects (pickle)", "eval", fmt("images={w.bad}/object.npz", *EVAL),
         fmt("{w.bad}/object.npz is not a readable .npz")),
    Case("eval npz of floats", "eval", fmt("images={w.bad}/float.npz", *EVAL), fmt("expected uint8", "float32")),
    Case("eval n=0", "eval", fmt("images={w.bad}/ok.npz", "n=0", *EVAL), fmt("n=0")),
    Case("eval out not writable", "eval", fmt("images={w.bad}/ok.npz", "out=/proc/genarena", *EVAL),
         fmt("out=/proc/genarena")),
    Case("eval weak domain classifier", "eval", fmt("images={w.bad}/ok.npz", *EVAL),
         fmt("validation accuracy 0.125", "classifier.min_val_acc=0.9", "classifier.max_steps=3000")),
    Case("eval a failed run", "eval", fmt("ckpt={w.failed}"), fmt("{w.failed} failed", "NonFiniteError")),
    Case("eval negative temperature", "eval", fmt("ckpt={w.gen}", "sampling.temperature=-0.5"),
         fmt("sampling.temperature=-0.5")),
    Case("eval +foo", "eval", fmt("images={w.bad}/ok.npz", "+eval.foo=1", *EVAL), fmt("eval.foo is not a config key")),
    # ------------------------------------------------------------------ API and genarena-scaling
    Case("genarena.evaluate a failed run", "api", fmt("evaluate", "{w.failed}"), fmt("{w.failed} failed")),
    Case("genarena.load a payload", "api", fmt("load", "{w.bad}/payload.ckpt"), fmt("needs unsafe loading")),
    Case("scaling a failed run", "scaling", fmt("--runs", "{w.failed}"),
         fmt("no finished generator runs", "failed: NonFiniteError: training diverged")),
    # ------------------------------------------------------------------ as separate processes
    Case("process: tokenizer.ckpt payload", "subprocess-train",
         train("task=generator", "tokenizer.ckpt={w.bad}/payload_raw.ckpt"), fmt("needs unsafe loading")),
]

MAINS = {"train": ("genarena-train", train_cli.main), "sample": ("genarena-sample", sample_cli.main),
         "eval": ("genarena-eval", eval_cli.main)}


def invoke(case: Case, args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """Run one case as the user would; returns (exit status, everything printed)."""
    if case.command.startswith("subprocess-"):
        proc = subprocess.run([sys.executable, "-m", "genarena.cli.train", *args], capture_output=True, text=True,
                              timeout=300)
        return proc.returncode, proc.stdout + proc.stderr
    if case.command == "api":
        fn = {"evaluate": genarena.evaluate, "load": genarena.load}[args[0]]
        try:
            fn(args[1])
        except CheckpointError as e:
            return 2, str(e)
        return 0, ""
    code = 0
    try:
        if case.command == "scaling":
            scaling_cli.main(args)
        else:
            prog, main = MAINS[case.command]
            monkeypatch.setattr(sys, "argv", [prog, *args])
            main()
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(world, case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENARENA_RUNS_DIR", str(world.runs))
    monkeypatch.setenv("GENARENA_CACHE_DIR", str(world.cache))
    before = snapshot(world.runs, world.cache)
    outside = {p.name for p in world.base.parent.iterdir()}
    code, out = invoke(case, case.args(world), monkeypatch, capsys)
    assert code not in (0, None), out[-2000:]
    assert "Traceback" not in out, out[-3000:]
    for needle in case.needles(world):
        assert needle in out, (needle, out[-2000:])
    after = snapshot(world.runs, world.cache)
    assert {k: after.get(k, "gone") for k in before} == before  # nothing earlier on disk changed
    new = sorted(set(after) - set(before))
    if case.leaves_failed_run:  # the job trained: its run stays, failed with the reason
        records = [Path(p) for p in new if p.endswith("metrics.json")]
        assert len(records) == 1, new
        m = json.loads(records[0].read_text())
        assert m["status"] == "failed" and "diverged at step" in m["error"]
    else:  # stopped before its first training step: no directory or file left behind
        assert not new, new
    assert {p.name for p in world.base.parent.iterdir()} == outside  # nothing written beside the runs directory
    assert not world.marker.exists()  # no payload ever ran


def test_there_are_at_least_40_cases():
    assert len(CASES) >= 40 and len({c.name for c in CASES}) == len(CASES)


# ---------------------------------------------------------------------------------------------- run directories
def test_run_training_never_writes_into_a_run_of_another_config_nor_removes_foreign_files(world, tmp_path):
    before = snapshot(world.gen)
    with pytest.raises(ConfigError, match="already holds a run of another config"):
        run_training(compose_cfg([*TINY_AR, f"tokenizer.ckpt={world.tok}", *FAST, *world.paths, "seed=1"]),
                     run_dir=world.gen)
    assert snapshot(world.gen) == before
    mine = tmp_path / "my_folder"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="generator.depth=0"):
        run_training(compose_cfg([*TINY_AR, f"tokenizer.ckpt={world.tok}", *FAST, *world.paths,
                                  "generator.depth=0"]), run_dir=mine)
    assert (mine / "notes.txt").read_text() == "mine"  # a folder that is not the job's own is never removed


# ---------------------------------------------------------------------------------------------- the guard
def test_diverged_generator_run_is_failed_with_the_step_and_its_checkpoints_are_finite(world):
    m = json.loads((world.failed / "metrics.json").read_text())
    assert m["status"] == "failed" and m["error"].startswith("NonFiniteError: training diverged at step ")
    assert "train/loss = nan" in m["error"] and not (world.failed / "checkpoints" / "last.ckpt").exists()
    for path in (world.failed / "checkpoints").glob("*.ckpt"):  # periodic ones, written before the divergence
        assert path.name.startswith("step")
        sd = torch.load(path, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())


def test_guard_names_the_step_and_the_loss_or_gradient():
    check_losses(3, {"train/loss": torch.tensor(1.0), "train/acc": 0.5})
    with pytest.raises(NonFiniteError, match=r"at step 7: non-finite loss \(train/loss_s1 = inf\)"):
        check_losses(7, {"train/loss": torch.tensor(1.0), "train/loss_s1": torch.tensor(float("inf"))})
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    with pytest.raises(NonFiniteError, match=r"at step 5: non-finite gradient norm \(nan\)"):
        check_grad_norm(5, [p], "32-true")
    assert not torch.isfinite(check_grad_norm(5, [p], "16-mixed"))  # the GradScaler skips such steps itself
    check_weights(1, {"w": torch.ones(2), "step": torch.tensor(3)})
    with pytest.raises(NonFiniteError, match="non-finite weights \\(generator.w\\); no checkpoint"):
        check_weights(9, {"generator.w": torch.tensor([float("nan")])})


# ---------------------------------------------------------------------------------------------- safe loading
PLAIN = (dict, list, tuple, str, int, float, bool, type(None), torch.Tensor)


def assert_plain(obj, where: str = "checkpoint") -> None:
    assert isinstance(obj, PLAIN), f"{where}: {type(obj)}"
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert_plain(k, f"{where} key")
            assert_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            assert_plain(v, f"{where}[{i}]")


def test_genarena_checkpoints_are_plain_containers(world):
    files = [*(world.tok / "checkpoints").glob("*.ckpt"), *(world.gen / "checkpoints").glob("*.ckpt"),
             *(world.cache / "classifiers").glob("*.pt")]
    assert len(files) >= 5
    for path in files:
        assert_plain(torch.load(path, weights_only=True), path.name)  # no allow-list needed


def test_allow_unsafe_load_reads_a_trusted_old_file(world, caplog):
    with pytest.raises(CheckpointError, match="argparse.Namespace"):
        read_checkpoint(world.bad / "namespace.ckpt")
    with caplog.at_level(logging.WARNING, logger="genarena"):
        tok, hp = load_tokenizer(world.bad / "namespace.ckpt", allow_unsafe=True)
    assert hp["role"] == "tokenizer" and "allow_unsafe_load=true" in caplog.text
    assert load_file(world.bad / "namespace.ckpt", allow_unsafe=True)["args"].lr == 1.0


def test_trainer_precisions_are_lightnings():
    from lightning.fabric.connector import _PRECISION_INPUT

    accepted = {str(v) for literal in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(literal)}
    assert set(TRAINER_PRECISIONS) == accepted


# ---------------------------------------------------------------------------------------------- W&B
def test_forced_online_wandb_without_a_server_logs_offline_at_once(tmp_path, monkeypatch, caplog):
    from lightning.pytorch.loggers import WandbLogger

    from genarena.lit.loggers import build_logger, finish_wandb

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a bad key
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # refused at once
    cfg = compose_cfg(["logger=wandb", "logger.mode=online", "logger.init_timeout=5", "task=tokenizer"])
    start = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="genarena"):
        logger = build_logger(cfg, tmp_path / "run")
    try:
        assert time.perf_counter() - start < 60  # not wandb's ~100 s of retries
        assert isinstance(logger, WandbLogger) and logger.experiment.settings.mode == "offline"
        lines = [r.getMessage() for r in caplog.records
                 if r.levelno >= logging.WARNING and r.name.startswith("genarena")]
        assert len(lines) == 1 and "unreachable: logging offline" in lines[0], lines
        assert logger._wandb_init["settings"].init_timeout == 5
    finally:
        finish_wandb()
