"""Released checkpoints of the official models -> a genarena run directory (``genarena-import``).

An imported run is laid out as a trained generator run, so ``genarena-sample``, ``genarena-eval`` and
:func:`genarena.load` take it unchanged:

- ``config.yaml``: the resolved root config (``task=generator``, the paradigm's and the tokenizer preset's options
  filled in with what the files hold, ``data`` as given: ImageNet at 256 px by default);
- ``checkpoints/last.ckpt``: self-contained, as a trained generator's (role ``generator``, the tokenizer's config and
  weights inside, the hyper-parameters :func:`~genarena.generators.load_generator` reads), plain containers only;
- ``metrics.json``: status ``finished``, task ``generator``, the paradigm, its parameters and FLOPs, and the
  provenance: the official repository and model, each source file and its sha256.

The models (``OFFICIAL_MODELS``) pair a released generator with the tokenizer it was trained on: VAR
(``var_d{16,20,24,30}.pth`` + ``vae_ch160v4096z32.pth``), MAR (``checkpoint-last.pth`` of MAR-B/L/H + ``kl16.ckpt``)
and LlamaGen's class-conditional GPT (``c2i_{B,L,XL}_256.pt`` + ``vq_ds16_c2i.pt``). Conversion is strict: a wrong
or truncated file stops with one :class:`~genarena.errors.CheckpointError` naming the file and its missing,
unexpected and mis-shaped keys, and nothing is written. The output directory is created at the end (written
beside it first, then renamed); an existing one is never overwritten.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from genarena.config import check_choice, check_tokenizer, compose, to_dict
from genarena.errors import CheckpointError, ConfigError
from genarena.generators import Generator, build_generator
from genarena.official import llamagen_gpt, llamagen_vq, mar_kl, mar_model, var_transformer, var_vqvae
from genarena.official.state_dicts import load_released
from genarena.runs import config_fingerprint, write_metrics
from genarena.tokenizers import Tokenizer, build_tokenizer

log = logging.getLogger("genarena")

IMAGE_CHANNELS = 3  # every official model is trained on RGB ImageNet


@dataclass
class Converted:
    """What one official model's files hold, in genarena's terms: configs and state dicts of the generator and
    its tokenizer, the image side they imply (``None``: not stored, ``data.resolution`` decides), the model's
    name and the weights imported (``ema`` or ``trained``)."""

    generator: dict[str, Any]
    generator_sd: dict[str, Tensor]
    tokenizer: dict[str, Any]
    tokenizer_sd: dict[str, Tensor]
    resolution: int | None
    model_name: str
    weights: str
    resolution_source: str = ""


@dataclass(frozen=True)
class OfficialModel:
    """An official model: its genarena paradigm and tokenizer preset, repository, released file names, converter."""

    paradigm: str
    tokenizer_preset: str
    repo: str
    tokenizer_name: str
    tokenizer_files: str
    generator_files: str
    convert: Callable[[DictConfig], Converted]


def code_dim(tokenizer_cfg: dict[str, Any]) -> int:
    """The dimension of a tokenizer's codes / tokens: ``ldm.embed_dim`` (after ``quant_conv``) or ``z_channels``."""
    ldm = tokenizer_cfg.get("ldm") or {}
    return int(ldm.get("embed_dim") or tokenizer_cfg["z_channels"])


def downsampling(tokenizer_cfg: dict[str, Any]) -> int:
    return 2 ** (len(tokenizer_cfg["ch_mult"]) - 1)


def _mismatch(cfg: DictConfig, what: str) -> CheckpointError:
    return CheckpointError(f"generator_file={cfg.generator_file} and tokenizer_file={cfg.tokenizer_file} do not belong "
                           f"together: {what}")


def _convert(path_key: str, cfg: DictConfig, fn: Callable[[], Any]) -> Any:
    """Run a reader or converter of ``cfg[path_key]``; its one-line error then names the file
    (``tokenizer_file=...: ...``)."""
    try:
        return fn()
    except CheckpointError as e:
        raise CheckpointError(f"{path_key}={cfg[path_key]}: {e}") from None


def _no_heads(cfg: DictConfig, model: str, why: str) -> None:
    if cfg.heads is not None:
        raise ConfigError(f"heads={cfg.heads} does not apply to model={model}: {why}")


def convert_var(cfg: DictConfig) -> Converted:
    """VAR-d{16,20,24,30} and its VQVAE; the scales come from the transformer (``lvl_1L``), the image side is
    ``patch_nums[-1]`` times the VQVAE's downsampling."""
    _no_heads(cfg, "var", "VAR's head count is stored in its weights")
    state_dict = _convert("generator_file", cfg,
                          lambda: load_released(cfg.generator_file, var_transformer.SOURCE, None))
    gen_cfg, gen_sd = _convert("generator_file", cfg, lambda: var_transformer.convert_var_transformer(state_dict))
    patch_nums = var_transformer.read_patch_nums(state_dict["lvl_1L"])
    tok_cfg, tok_sd = _convert("tokenizer_file", cfg,
                               lambda: var_vqvae.load_official_var_vqvae(cfg.tokenizer_file, patch_nums=patch_nums))
    vocab, dim = gen_sd["head.proj.weight"].shape[0], gen_sd["word_embed.weight"].shape[1]
    if (vocab, dim) != (tok_cfg["vocab_size"], code_dim(tok_cfg)):
        raise _mismatch(cfg, f"the transformer predicts {vocab} codes of {dim} dims, the VQVAE has "
                             f"{tok_cfg['vocab_size']} codes of {code_dim(tok_cfg)} dims")
    return Converted(gen_cfg, gen_sd, tok_cfg, tok_sd, patch_nums[-1] * downsampling(tok_cfg),
                     f"VAR-d{gen_cfg['depth']}", "trained", f"the transformer's last scale {patch_nums[-1]}")


def convert_mar(cfg: DictConfig) -> Converted:
    """MAR-B/L/H (EMA weights unless ``ema=false``) and KL-16; the image side is the token grid (from the
    diffusion position embeddings) times the KL-16's downsampling."""
    gen_cfg, gen_sd = _convert("generator_file", cfg,
                               lambda: mar_model.load_official_mar(cfg.generator_file, ema=cfg.ema, heads=cfg.heads))
    tok_cfg, tok_sd = _convert("tokenizer_file", cfg, lambda: mar_kl.load_official_mar_kl(cfg.tokenizer_file))
    seq_len, token_dim = gen_sd["diff_pos_embed"].shape[1], gen_sd["z_proj.weight"].shape[1]
    grid = math.isqrt(seq_len)
    if grid * grid != seq_len:
        raise CheckpointError(f"generator_file={cfg.generator_file}: {seq_len} token positions are not a square grid")
    if token_dim != code_dim(tok_cfg):
        raise _mismatch(cfg, f"MAR models {token_dim}-dim tokens, the KL tokenizer makes {code_dim(tok_cfg)}-dim ones")
    name = {width: f"MAR-{size}" for width, size in zip(mar_model.RELEASED, "BLH")}.get(
        gen_cfg["width"], f"MAR (width {gen_cfg['width']})")
    return Converted(gen_cfg, gen_sd, tok_cfg, tok_sd, grid * downsampling(tok_cfg), name,
                     "ema" if cfg.ema else "trained", f"MAR's {grid}x{grid} token positions")


def convert_llamagen(cfg: DictConfig) -> Converted:
    """LlamaGen's c2i GPT-B/L/XL and VQ-16; the token grid is not stored (RoPE is recomputed): ``data.resolution``
    divided by the VQ's downsampling (256 px: the ``_256`` models' 16x16)."""
    gen_cfg, gen_sd = _convert("generator_file", cfg, lambda: llamagen_gpt.load_official_llamagen_gpt(
        cfg.generator_file, heads=cfg.heads, ffn_multiple_of=cfg.ffn_multiple_of))
    tok_cfg, tok_sd = _convert("tokenizer_file", cfg, lambda: llamagen_vq.load_official_llamagen_vq(cfg.tokenizer_file))
    vocab = gen_sd["token_embed.weight"].shape[0]
    if vocab != tok_cfg["vocab_size"]:
        raise _mismatch(cfg, f"the GPT predicts {vocab} codes, the VQ tokenizer has {tok_cfg['vocab_size']}")
    size = next((n for n, (d, _, w) in llamagen_gpt.OFFICIAL_SIZES.items()
                 if (d, w) == (gen_cfg["depth"], gen_cfg["width"])), f"GPT (width {gen_cfg['width']})")
    return Converted(gen_cfg, gen_sd, tok_cfg, tok_sd, None, f"LlamaGen c2i {size}", "trained")


OFFICIAL_MODELS: dict[str, OfficialModel] = {
    "var": OfficialModel("var", "var_vqvae", "FoundationVision/VAR", "VAR VQVAE", "vae_ch160v4096z32.pth",
                         "var_d{16,20,24,30}.pth", convert_var),
    "mar": OfficialModel("mar", "mar_kl16", "LTH14/mar", "MAR KL-16", "kl16.ckpt",
                         "checkpoint-last.pth (MAR-B/L/H)", convert_mar),
    "llamagen": OfficialModel("ar", "llamagen_vq16", "FoundationVision/LlamaGen", "LlamaGen VQ-16", "vq_ds16_c2i.pt",
                              "c2i_{B,L,XL}_256.pt", convert_llamagen),
}


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def check_out(out: str | Path) -> Path:
    """The output directory, which must not exist yet."""
    path = Path(out).expanduser()
    if path.exists():
        raise ConfigError(f"out={out} already exists; genarena-import never overwrites: give a new directory")
    return path


def resolve_resolution(cfg: DictConfig, converted: Converted) -> int:
    """The imported run's image side: what the files imply (which ``data.resolution`` must equal), else
    ``data.resolution``; checked against the tokenizer's downsampling."""
    res = int(cfg.data.resolution)
    if converted.resolution is not None and converted.resolution != res:
        raise ConfigError(f"the checkpoints hold {converted.resolution} px images ({converted.resolution_source} x "
                          f"the tokenizer's downsampling {downsampling(converted.tokenizer)}), but "
                          f"data.resolution={res}; set data.resolution={converted.resolution}")
    return res


def build_modules(model: OfficialModel, converted: Converted, resolution: int,
                  num_classes: int) -> tuple[Tokenizer, Generator]:
    """The genarena tokenizer and generator, loaded strictly with the converted weights (fp32, eval mode)."""
    try:
        tokenizer = build_tokenizer(converted.tokenizer, IMAGE_CHANNELS, resolution)
        generator = build_generator(converted.generator, tokenizer, num_classes)
    except ValueError as e:  # e.g. a head count that does not divide the width
        raise ConfigError(f"cannot build {converted.model_name} as genarena's {model.paradigm}: {e}") from None
    for name, module, sd in (("tokenizer", tokenizer, converted.tokenizer_sd),
                             ("generator", generator, converted.generator_sd)):
        try:
            module.load_state_dict(sd, strict=True)
        except RuntimeError as e:  # a converter that disagrees with genarena's module: a bug, said in one line
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f"the converted {model.paradigm} {name} does not fit genarena's module: "
                                  f"{first}") from None
    return tokenizer.eval(), generator.eval()


def run_config(cfg: DictConfig, model: OfficialModel, converted: Converted, data: dict[str, Any]) -> DictConfig:
    """The root config of the imported run: ``task=generator`` with the paradigm and the tokenizer preset, their
    options replaced by the converted ones (typed by the schemas), and the import's data."""
    run = compose("config", ["task=generator", f"generator={model.paradigm}", f"tokenizer={model.tokenizer_preset}"])
    run.generator = OmegaConf.merge(run.generator, converted.generator)
    run.tokenizer = OmegaConf.merge(run.tokenizer, {**converted.tokenizer, "ckpt": None})
    OmegaConf.set_struct(run, False)
    run.data = OmegaConf.create(data)
    OmegaConf.set_struct(run, True)
    return run


def provenance(cfg: DictConfig, model: OfficialModel, converted: Converted) -> dict[str, Any]:
    """Where the weights came from: repository, model, each file (absolute path) and its sha256."""
    files = {key: Path(cfg[f"{key}_file"]).expanduser().resolve() for key in ("tokenizer", "generator")}
    return {"source": "official", "official_repo": model.repo, "official_model": converted.model_name,
            "official_tokenizer": model.tokenizer_name, "official_weights": converted.weights,
            **{f"{key}_file": str(path) for key, path in files.items()},
            **{f"{key}_sha256": sha256(path) for key, path in files.items()}}


def import_official(cfg: DictConfig) -> Path:
    """Convert ``cfg.generator_file`` and ``cfg.tokenizer_file`` of ``cfg.model`` (``conf/import.yaml``) into the run
    directory ``cfg.out``; returns it. Nothing is written unless every check passes."""
    check_choice("model", cfg.model, tuple(OFFICIAL_MODELS))
    model = OFFICIAL_MODELS[cfg.model]
    out = check_out(cfg.out)
    converted = model.convert(cfg)
    if cfg.norm_groups < 1:
        raise ConfigError(f"norm_groups={cfg.norm_groups} must be at least 1 (32 in every official tokenizer)")
    converted.tokenizer["ldm"]["norm_groups"] = int(cfg.norm_groups)
    resolution = resolve_resolution(cfg, converted)
    data = {**to_dict(cfg.data), "resolution": resolution, "channels": IMAGE_CHANNELS}
    run_cfg = run_config(cfg, model, converted, data)
    check_tokenizer(run_cfg.tokenizer, resolution)
    num_classes = converted.generator_sd["class_embed.weight"].shape[0] - 1  # the last row: the null class
    log.info("building %s (%s) on %d px images, %d classes", converted.model_name, model.paradigm, resolution,
             num_classes)
    tokenizer, generator = build_modules(model, converted, resolution, num_classes)
    source = provenance(cfg, model, converted)
    generator_cfg, tokenizer_cfg = to_dict(run_cfg.generator), to_dict(run_cfg.tokenizer)
    state_dict = {**{f"tokenizer.{k}": v for k, v in tokenizer.state_dict().items()},
                  **{f"generator.{k}": v for k, v in generator.state_dict().items()}}
    checkpoint = {
        "state_dict": state_dict, "global_step": 0, "epoch": 0, "official": source,
        "hyper_parameters": {"role": "generator", "generator": generator_cfg, "tokenizer": tokenizer_cfg,
                             "tokenizer_ckpt": source["tokenizer_file"], "data": data, "num_classes": num_classes,
                             "weights": converted.weights},
    }
    sampling = generator_cfg["sampling"]
    metrics = {
        "task": "generator", "status": "finished", "experiment_name": run_cfg.experiment_name, "sweep": None,
        "config_fingerprint": config_fingerprint(run_cfg), "data": data["name"], "seed": run_cfg.seed,
        "run_dir": str(out), "paradigm": generator.name, "tokenizer": tokenizer_cfg["name"],
        "tokenizer_ckpt": source["tokenizer_file"], "depth": generator.depth, "width": generator.width,
        "heads": generator.heads, "params": generator.num_params(),
        "params_non_embedding": generator.num_params(non_embedding=True), "num_classes": num_classes,
        "resolution": resolution, "tokens_per_image": generator.tokens_per_image,
        "sampling_steps": generator.sampling_steps(**sampling),
        "flops_train_per_image": generator.flops_per_image(True),
        "flops_sample_per_image": generator.flops_per_image(False, **sampling), **source,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.importing-{os.getpid()}"
    try:
        (staging / "checkpoints").mkdir(parents=True)
        (staging / "config.yaml").write_text(OmegaConf.to_yaml(run_cfg, resolve=True))
        torch.save(checkpoint, staging / "checkpoints" / "last.ckpt")
        write_metrics(staging, metrics)
        check_out(out)  # still free after the (long) conversion
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    log.info("imported %s (%s parameters) into %s", converted.model_name, f"{metrics['params']:,}", out)
    return out


__all__ = ["OFFICIAL_MODELS", "Converted", "OfficialModel", "import_official"]
