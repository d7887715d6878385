"""Resume a user can trust: a killed, interrupted or preempted run continues exactly where it stopped.

One tiny MaskGIT (random masks every step: the RNG state matters) trained 100 steps on procedural data,
uninterrupted, is the reference; every resumed run must end at its final validation loss to 1e-5. Without
the restored RNG state or data position the loss differs by more than 1e-4 (checked when this was written).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genarena.errors import ConfigError
from genarena.lit.generator_module import GeneratorModule
from genarena.runs import STALE_AFTER_S, iter_runs, read_metrics, write_metrics
from genarena.training import run_training

from .conftest import compose_cfg, tiny_generator_overrides, tiny_tokenizer_overrides

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "log.sample_every_n_steps=0",
         "trainer.num_threads=1"]
STEPS = ["trainer.max_steps=100", "log.checkpoint_every_n_steps=20", "trainer.val_check_interval=50",
         "data.batch_size=16"]
EXPERIMENT = "generator_maskgit_synthetic"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny vq tokenizer, the generator overrides of every run here, and the uninterrupted reference run."""
    root = tmp_path_factory.mktemp("resume")
    cache = f"paths.cache_dir={root / 'cache'}"
    tok = run_training(compose_cfg(["task=tokenizer", *tiny_tokenizer_overrides("vq"), "experiment=smoke",
                                    "trainer.max_steps=4", "logger=none", *QUIET, cache,
                                    f"paths.runs_dir={root / 'tok'}"]))
    gen = ["task=generator", *tiny_generator_overrides("maskgit"), "experiment=smoke",
           f"tokenizer.ckpt={tok['run_dir']}", *STEPS, *QUIET, "logger=csv", cache]
    reference = run_training(compose_cfg([*gen, f"paths.runs_dir={root / 'reference'}"]))
    assert reference["status"] == "finished" and reference["steps"] == 100
    return root, gen, reference


def runs_of(runs_dir: Path) -> list[Path]:
    exp = runs_dir / EXPERIMENT
    return sorted(p for p in exp.iterdir() if p.is_dir()) if exp.is_dir() else []


def start_cli(root: Path, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "genarena.cli.train", *args], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoint(runs_dir: Path, proc: subprocess.Popen, timeout: float = 300) -> Path:
    """The first periodic checkpoint the process writes (polled every 20 ms)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        found = list(runs_dir.glob(f"{EXPERIMENT}/*/checkpoints/step*.ckpt"))
        if found:
            return found[0]
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.02)
    raise TimeoutError("no checkpoint")


def interrupt_at(monkeypatch, step: int) -> None:
    """Ctrl-C in the middle of training at ``step`` (Lightning stops, the run records ``interrupted``)."""
    def hook(self, *args):
        if self.global_step == step:
            raise KeyboardInterrupt
    monkeypatch.setattr(GeneratorModule, "on_train_batch_end", hook, raising=False)


def test_killed_run_resumes_exactly_when_the_same_command_runs_again(setup):
    root, gen, reference = setup
    runs_dir = root / "killed"
    args = [*gen, f"paths.runs_dir={runs_dir}"]
    proc = start_cli(root, args)
    wait_for_checkpoint(runs_dir, proc)
    proc.kill()  # kill -9
    proc.wait()
    [run] = runs_of(runs_dir)
    assert json.loads((run / "metrics.json").read_text())["status"] == "running"  # as the killed process left it
    # the next look notices the process is gone
    [record] = [r for r in iter_runs(runs_dir)]
    assert record.metrics["status"] == "interrupted" and "is gone" in record.metrics["interrupted_reason"]
    assert read_metrics(run)["status"] == "interrupted"
    again = subprocess.run([sys.executable, "-m", "genarena.cli.train", *args], cwd=root, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert runs_of(runs_dir) == [run]  # the same directory; Hydra's new one is gone
    m = read_metrics(run)
    assert m["status"] == "finished" and m["sessions"] == 2 and m["steps"] == 100
    assert Path(m["resumed_from"]).parent == run / "checkpoints"
    assert abs(m["val_loss"] - reference["val_loss"]) < 1e-5
    assert abs(m["val_loss_best"] - reference["val_loss_best"]) < 1e-5
    assert "resuming" in (run / "train.log").read_text()


def test_sigterm_writes_a_checkpoint_and_the_run_resumes(setup):
    root, gen, reference = setup
    runs_dir = root / "sigterm"
    proc = start_cli(root, [*gen, f"paths.runs_dir={runs_dir}"])
    wait_for_checkpoint(runs_dir, proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in out, out[-3000:]
    [run] = runs_of(runs_dir)
    m = read_metrics(run)
    assert m["status"] == "interrupted" and m["interrupted_reason"] == "SIGTERM"
    ckpt = Path(m["resume_point"])
    assert ckpt.is_file() and ckpt.parent == run / "checkpoints"
    resumed = run_training(compose_cfg([*gen, f"paths.runs_dir={runs_dir}"]))  # the same command, in-process
    assert resumed["run_dir"] == str(run) and resumed["resumed_from"] == str(ckpt) and resumed["sessions"] == 2
    assert abs(resumed["val_loss"] - reference["val_loss"]) < 1e-5
    assert resumed["train_time_s"] > 0


def test_resume_by_run_directory_by_checkpoint_and_never(setup, monkeypatch):
    root, gen, reference = setup
    runs_dir = root / "explicit"
    base = [*gen, f"paths.runs_dir={runs_dir}"]
    interrupt_at(monkeypatch, 30)
    with pytest.raises(SystemExit):
        run_training(compose_cfg(base))
    # resume=never starts afresh in a new directory instead of continuing the interrupted run
    interrupt_at(monkeypatch, 70)
    with pytest.raises(SystemExit):
        run_training(compose_cfg([*base, "resume=never"]))
    monkeypatch.undo()
    # the second run got further (60 steps); names alone do not order two runs started in the same second
    first, second = sorted(runs_of(runs_dir), key=lambda run: (run / "checkpoints" / "step000060.ckpt").exists())
    for run in (first, second):
        m = read_metrics(run)
        assert m["status"] == "interrupted" and m["resumed_from"] is None and m["sessions"] == 1
    # resume=<checkpoint file>: that checkpoint, in its own run's directory
    ckpt = first / "checkpoints" / "step000020.ckpt"
    by_ckpt = run_training(compose_cfg([*base, f"resume={ckpt}"]))
    assert by_ckpt["run_dir"] == str(first) and by_ckpt["resumed_from"] == str(ckpt) and by_ckpt["sessions"] == 2
    assert abs(by_ckpt["val_loss"] - reference["val_loss"]) < 1e-5
    # resume=<run directory>: its newest checkpoint (force: an identical run has finished by now)
    by_dir = run_training(compose_cfg([*base, f"resume={second}", "force=true"]))
    assert by_dir["run_dir"] == str(second)
    assert by_dir["resumed_from"] == str(second / "checkpoints" / "step000060.ckpt")
    assert abs(by_dir["val_loss"] - reference["val_loss"]) < 1e-5
    # a checkpoint of another config continues in a new directory (here: trained longer)
    longer = run_training(compose_cfg([*base, f"resume={second}", "trainer.max_steps=120"]))
    assert Path(longer["run_dir"]) not in (first, second) and longer["steps"] == 120
    assert longer["resumed_from"] == str(second / "checkpoints" / "last.ckpt")


def test_ema_weights_are_resumed(setup, tmp_path, monkeypatch):
    _, gen, _ = setup
    ema = [*gen, "trainer.max_steps=60", "callbacks.ema.enabled=true", "callbacks.ema.decay=0.9"]
    straight = run_training(compose_cfg([*ema, f"paths.runs_dir={tmp_path / 'straight'}"]))
    interrupt_at(monkeypatch, 50)
    with pytest.raises(SystemExit):
        run_training(compose_cfg([*ema, f"paths.runs_dir={tmp_path / 'resumed'}"]))
    monkeypatch.undo()
    resumed = run_training(compose_cfg([*ema, f"paths.runs_dir={tmp_path / 'resumed'}"]))
    assert Path(resumed["resumed_from"]).name == "step000040.ckpt"
    assert abs(resumed["val_loss"] - straight["val_loss"]) < 1e-5  # validation uses the averaged weights


def test_resume_values_that_cannot_work_are_clear_errors(setup, tmp_path):
    root, gen, _ = setup
    base = [*gen, f"paths.runs_dir={tmp_path / 'runs'}"]
    with pytest.raises(ConfigError, match="resume='nowhere'"):
        run_training(compose_cfg([*base, "resume=nowhere"]))
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no checkpoint to resume from"):
        run_training(compose_cfg([*base, f"resume={empty}"]))
    assert not (tmp_path / "runs").exists()  # nothing started


def test_a_killed_runs_status_becomes_interrupted_on_the_next_look(tmp_path, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        here = socket.gethostname()
        records = {
            "dead": {"pid": dead.pid, "host": here},
            "alive": {"pid": alive.pid, "host": here},
            "elsewhere_stale": {"pid": 1, "host": here + "-other", "heartbeat": time.time() - STALE_AFTER_S - 60},
            "elsewhere_recent": {"pid": 1, "host": here + "-other", "heartbeat": time.time()},
            "requeued": {"pid": 1, "host": here + "-other", "heartbeat": time.time(), "slurm_job_id": "42",
                         "slurm_restart_count": 0},
        }
        for name, record in records.items():
            write_metrics(tmp_path / name, {"status": "running", **record})
        monkeypatch.setenv("SLURM_JOB_ID", "42")
        monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
        status = {r.dir.name: r.metrics["status"] for r in iter_runs(tmp_path)}
        assert status == {"dead": "interrupted", "alive": "running", "elsewhere_stale": "interrupted",
                          "elsewhere_recent": "running", "requeued": "interrupted"}
        assert read_metrics(tmp_path / "dead")["status"] == "interrupted"  # rewritten on disk
        assert "requeued" in read_metrics(tmp_path / "requeued")["interrupted_reason"]
    finally:
        alive.kill()
        alive.wait()


def test_warm_and_cold_token_cache_give_identical_losses(setup, tmp_path):
    root, gen, _ = setup
    short = [*gen, "trainer.max_steps=20", f"paths.cache_dir={tmp_path / 'cache'}"]
    cold = run_training(compose_cfg([*short, f"paths.runs_dir={tmp_path / 'cold'}"]))
    assert list((tmp_path / "cache" / "tokens").glob("*.pt"))
    warm = run_training(compose_cfg([*short, f"paths.runs_dir={tmp_path / 'warm'}"]))
    assert cold["val_loss"] == warm["val_loss"]


def test_a_resumed_wandb_run_continues_the_same_wandb_run(tmp_path, monkeypatch):
    from genarena.lit.loggers import build_logger, finish_wandb, wandb_run_id

    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose_cfg(["logger=wandb", "logger.mode=offline"])
    first = build_logger(cfg, tmp_path)
    run_id = wandb_run_id(first)
    finish_wandb()
    again = build_logger(cfg, tmp_path, resume_id=run_id)
    assert wandb_run_id(again) == run_id
    finish_wandb()




FAKE_SUBMITIT = """
import os, signal, sys
from pathlib import Path
def requeue(signum, frame):  # what submitit does on its signal: requeue the job, then exit
    Path(os.environ["MARKER"]).write_text(" ".join(sorted(p.name for p in Path(os.environ["RUNS"]).rglob("*.ckpt"))))
    sys.exit(-1)
signal.signal(signal.SIGUSR2, requeue)
signal.signal(signal.SIGTERM, lambda *a: None)  # submitit's SIGTERM handler only logs
from genarena.cli.train import main
sys.argv = ["genarena-train", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_submitit_requeue_signal_writes_a_checkpoint_before_submitit_requeues(setup, tmp_path):
    root, gen, reference = setup
    runs_dir, marker = tmp_path / "runs", tmp_path / "requeued"
    args = [*gen, f"paths.runs_dir={runs_dir}"]
    env = {**os.environ, "SUBMITIT_EXECUTOR": "slurm", "MARKER": str(marker), "RUNS": str(runs_dir)}
    proc = subprocess.Popen([sys.executable, "-c", FAKE_SUBMITIT, *args], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    run = wait_for_checkpoint(runs_dir, proc).parent.parent
    proc.send_signal(signal.SIGUSR2)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 255, out[-3000:]  # submitit's exit, after genarena's checkpoint
    m = read_metrics(run)
    assert m["status"] == "interrupted" and m["interrupted_reason"] == "SIGTERM"
    assert Path(m["resume_point"]).name in marker.read_text().split()  # written before submitit requeued
    resumed = run_training(compose_cfg(args))
    assert abs(resumed["val_loss"] - reference["val_loss"]) < 1e-5 and resumed["sessions"] == 2
