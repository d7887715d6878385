"""Config composition and validation: every mistake stops early with a message that names it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from genarena.config import SCHEMAS, config_dir, validate
from genarena.errors import ConfigError

from .conftest import compose_cfg


def test_default_config_composes_and_validates():
    cfg = compose_cfg()
    validate(cfg)
    assert cfg.task == "tokenizer" and cfg.data.name == "mnist5k" and cfg.tokenizer.name == "msvq"


@pytest.mark.parametrize("group", sorted(SCHEMAS))
def test_every_option_of_every_group_composes_with_its_schema(group):
    for path in sorted((config_dir() / group).glob("*.yaml")):
        overrides = [f"{group}={path.stem}"]
        if path.stem in ("imagefolder", "imagenet"):
            overrides.append("data.root=/some/where")
        cfg = compose_cfg(overrides)
        assert OmegaConf.get_type(cfg[group]) in SCHEMAS[group].values(), path.name


@pytest.mark.parametrize("option", ["cpu", "gpu", "ddp", "fsdp"])
def test_trainer_options(option):
    cfg = compose_cfg([f"trainer={option}"])
    assert cfg.trainer.strategy in ("auto", "ddp", "fsdp")


@pytest.mark.parametrize("launcher", ["local", "parallel", "slurm"])
def test_launcher_options_compose(launcher):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert "_target_" in cfg.hydra.launcher


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="resolutoin"):
        compose_cfg(["data.resolutoin=64"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="batch_size") as e:
        compose_cfg(["data.batch_size=lots"])
    assert "lots" in str(e.value)


def test_unknown_option_lists_the_accepted_ones():
    with pytest.raises(ConfigError) as e:
        compose_cfg(["tokenizer=vqgan"])
    assert "vq" in str(e.value) and "msvq" in str(e.value)


@pytest.mark.parametrize("override, accepted", [
    ("optim.schedule=cosin", "cosine, linear, constant"),
    ("eval.checkpoint=first", "best, last"),
])
def test_semantic_choices_are_checked(override, accepted):
    cfg = compose_cfg([override])
    with pytest.raises(ConfigError, match=accepted):
        validate(cfg)


def test_generator_task_needs_a_tokenizer_checkpoint():
    cfg = compose_cfg(["task=generator"])
    with pytest.raises(ConfigError, match="tokenizer.ckpt"):
        validate(cfg)


def test_patch_nums_must_end_at_the_latent_side():
    cfg = compose_cfg(["tokenizer.patch_nums=[1,2,4]"])
    with pytest.raises(ConfigError, match="patch_nums"):
        validate(cfg)


def test_an_option_without_schema_is_rejected():
    cfg = compose_cfg()
    OmegaConf.set_struct(cfg, False)
    cfg.data = OmegaConf.create({"name": "mnist5k"})  # what a YAML without `defaults: [/schema/...]` gives
    with pytest.raises(ConfigError, match="schema"):
        validate(cfg)


def _run_cli(args: list[str], cwd: Path):
    return subprocess.run([sys.executable, "-m", "genarena.cli.train", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("args,needle", [
    (["data.foo=1"], "foo"),
    (["tokenizer=vqgan"], "Available options in 'tokenizer'"),
    (["data=imagefolder", "data.root=/no/such/dir", "trainer.max_steps=1"], "/no/such/dir"),
])
def test_cli_errors_are_clear_and_short(workdir, args, needle):
    proc = _run_cli(args, workdir)
    assert proc.returncode != 0
    err = proc.stderr
    assert needle in err
    assert "Traceback" not in err


@pytest.mark.parametrize("preset", sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml")))
def test_experiment_presets_compose_and_validate(preset):
    overrides = [f"experiment={preset}"]
    if preset == "imagenet256":  # no data on this machine: check the composed config, not the folder
        cfg = compose_cfg([*overrides, "data.root=/some/where", "tokenizer=vq"])
        assert cfg.data.resolution == 256 and cfg.trainer.strategy == "ddp" and cfg.logger.name == "wandb"
        return
    cfg = compose_cfg(overrides)
    validate(cfg)
    assert cfg.data.name == "synthetic" and cfg.trainer.max_steps == 20
