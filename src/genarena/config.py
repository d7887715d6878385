"""Typed schemas for every config group, the accepted values of string choices, and composition.

Values live in the YAML files under ``conf/``; these dataclasses only fix the *shape*: which keys
exist and of which type. Every option file starts with ``defaults: [/schema/<group>/<kind>@_here_]``
so that an unknown key or a wrong type fails at composition time with the full key named, and an
unknown option fails with Hydra's list of the available ones. :func:`validate` adds the semantic
checks a type cannot express (accepted values of string choices, ranges, cross-group consistency).

The accepted values of every string choice are defined once: those of the training, logging and
evaluation infrastructure here, those of a model option (``generator.init``, ``generator.backbone``,
``tokenizer.net``, ...) beside the model code that implements them; every other check imports them from
there. This module imports no torch and no Hydra at import time (Hydra is imported by the functions that
register or compose configs), so model code may import its constants.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from omegaconf import MISSING, DictConfig, OmegaConf

from genarena.errors import ConfigError

# ------------------------------------------------------------------------------ accepted values
TASKS = ("tokenizer", "classifier", "generator")
DATA_CHANNELS = (1, 3)
RECON_LOSSES = ("l1", "l2")
CFG_SCHEDULES = ("constant", "linear")
OPTIM_SCHEDULES = ("cosine", "linear", "constant")
LOGGERS = ("wandb", "csv", "none")
LOGGER_MODES = ("auto", "online", "offline", "disabled")
EVAL_EXTRACTORS = ("auto", "inception", "domain")  # auto: Inception when its weights are at hand, else domain
EVAL_SPLITS = ("train", "val")
EVAL_METRICS = ("fid", "isc", "kid", "prc")
CHECKPOINT_SELECTIONS = ("best", "last")  # of a run directory: lowest val/loss | end of training
SAMPLE_FORMATS = ("genarena", "adm")  # samples.npz: images (N, H, W, C) + labels | ADM's arr_0 (N, H, W, 3) + arr_1
RESUME_MODES = ("auto", "never")  # resume=: continue the newest interrupted run of the config | start afresh
# trainer.* keys genarena reads itself; every other trainer key is a lightning.Trainer argument
GENARENA_TRAINER_KEYS = ("compile", "num_threads")
# Trainer arguments genarena sets from other groups (loggers, callbacks, the run directory)
RESERVED_TRAINER_KEYS = ("logger", "callbacks", "default_root_dir", "enable_checkpointing")


# ----------------------------------------------------------------------------------------- data
@dataclass
class DataConfig:
    name: str = MISSING  # source name, see genarena.data.sources.SOURCES
    root: str | None = None  # data directory (torchvision / imagefolder sources)
    download: bool = False  # torchvision sources: download when missing
    resolution: int = MISSING  # images are resized / padded to (resolution, resolution)
    channels: int = MISSING  # 1 (grayscale) or 3 (RGB); sources are converted when they differ
    batch_size: int = MISSING
    num_workers: int = MISSING
    val_fraction: float = MISSING  # sources without an official split hold this fraction out
    split_seed: int = MISSING  # seed of the deterministic train/val split
    hflip: bool = False  # random horizontal flips in training (natural images only)


@dataclass
class SyntheticDataConfig(DataConfig):
    num_classes: int = MISSING
    num_images: int = MISSING  # total images, split by val_fraction


# ----------------------------------------------------------------------------------- tokenizers
@dataclass
class PerceptualLossConfig:
    weight: float = MISSING  # 0 disables
    weights_path: str | None = None  # local torchvision VGG16 state dict; nothing is downloaded


@dataclass
class DiscriminatorConfig:
    weight: float = MISSING  # 0 disables the PatchGAN
    start_step: int = MISSING  # the adversarial term switches on at this step
    channels: int = MISSING
    layers: int = MISSING
    lr: float = MISSING


@dataclass
class LDMNetConfig:
    """The LDM encoder/decoder of the official tokenizers (``net: ldm``, ``tokenizers/ldm.py``)."""

    embed_dim: int | None = None  # code / token dimension after quant_conv; None: z_channels
    quant_conv_kernel: int = MISSING  # kernel of quant_conv and post_quant_conv: 3 (VAR) or 1 (MAR, LlamaGen)
    encoder_attn: bool = MISSING  # self-attention after each res block of the lowest level (mid attention always)
    decoder_attn: bool = MISSING  # the same in the decoder (VAR, LlamaGen: true; MAR's KL-16: false)
    norm_groups: int = MISSING  # GroupNorm groups (32 in every official model)


@dataclass
class TokenizerConfig:
    name: str = MISSING  # vq | msvq | kl
    ckpt: str | None = None  # a trained tokenizer (file or run directory); generators need it
    net: str = MISSING  # genarena: small ResNet (tokenizers/nets.py) | ldm: the official tokenizers' LDM nets
    ch: int = MISSING  # base width of the conv encoder/decoder
    ch_mult: list[int] = MISSING  # width multipliers per level; downsampling = 2 ** (len - 1)
    num_res_blocks: int = MISSING
    z_channels: int = MISSING  # latent channels; the code dimension (vq/msvq) or token_dim (kl) unless ldm.embed_dim
    ldm: LDMNetConfig = field(default_factory=LDMNetConfig)  # read only when net=ldm
    recon_loss: str = MISSING  # l1 | l2
    perceptual: PerceptualLossConfig = field(default_factory=PerceptualLossConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)


@dataclass
class VQTokenizerConfig(TokenizerConfig):
    vocab_size: int = MISSING
    beta: float = MISSING  # commitment weight
    l2_norm_codes: bool = MISSING  # cosine-similarity lookup on the unit sphere (ViT-VQGAN / LlamaGen)
    entropy_weight: float = MISSING  # codebook-usage entropy bonus (MaskGIT / MAGVIT), 0 disables
    entropy_temperature: float = MISSING
    dead_code_threshold: float = MISSING  # codes whose EMA usage falls below this are re-initialised
    usage_decay: float = MISSING  # EMA decay of the per-code usage counts


@dataclass
class MSVQTokenizerConfig(VQTokenizerConfig):
    patch_nums: list[int] = MISSING  # side of each scale's token map, small to large
    quant_resi: float = MISSING  # r in phi(h) = (1 - r) h + r conv3x3(h)
    share_quant_resi: int = MISSING  # number of partially shared phi convs; 0: one per scale
    scale_norm: str = MISSING  # none | standardize | whiten: each scale's residual before the codebook lookup


@dataclass
class KLTokenizerConfig(TokenizerConfig):
    kl_weight: float = MISSING
    scale_factor: float | None = None  # None: measured on the training data after training


# ----------------------------------------------------------------------------------- generators
@dataclass
class SamplingConfig:
    cfg: float = MISSING  # guidance weight w: logits = cond + w (cond - uncond); 0 = no guidance
    cfg_schedule: str = MISSING  # constant | linear
    temperature: float = MISSING
    top_k: int = MISSING  # 0 disables (discrete paradigms)
    top_p: float = MISSING  # 0 or 1 disables (discrete paradigms)


@dataclass
class GeneratorConfig:
    name: str = MISSING  # var | ar | maskgit | mar
    depth: int = MISSING  # the one scaling knob
    width: int | None = None  # default 64 * depth (VAR's rule)
    heads: int | None = None  # default depth (head dim 64)
    mlp_ratio: float = MISSING
    qk_norm: bool = MISSING  # l2-normalised q/k with a learned per-head scale
    drop_path: float = MISSING
    dropout: float = MISSING  # on attention / MLP outputs
    class_dropout: float = MISSING  # labels replaced by the null class (for CFG)
    gate_init: float = MISSING  # initial AdaLN gate scale (blocks start near identity)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


@dataclass
class VARGeneratorConfig(GeneratorConfig):
    k_bias: bool = MISSING  # learned bias on the attention keys; false = VAR's (only q and v have biases)
    init: str = MISSING  # shared (the shared backbone's) | official (VAR's init_weights)
    init_adaln: float = MISSING  # init=official: AdaLN weight multiplier (scale and shift rows, head AdaLN)
    init_adaln_gamma: float = MISSING  # init=official: AdaLN gate-row multiplier
    init_head: float = MISSING  # output head weight multiplier (initial loss ~ ln V)


@dataclass
class ARGeneratorConfig(GeneratorConfig):
    pos_embed: str = MISSING  # rope2d | learned
    embed_dropout: float = MISSING  # token dropout on input embeddings (LlamaGen)
    backbone: str = MISSING  # shared (AdaLN / qk-norm, the default) | llama (LlamaGen's GPT)
    ffn_multiple_of: int = MISSING  # backbone=llama: SwiGLU hidden size rounded up to a multiple of this


@dataclass
class MaskGITSamplingConfig(SamplingConfig):
    steps: int = MISSING  # T decoding iterations
    choice_temperature: float = MISSING  # Gumbel noise on confidences, annealed to 0


@dataclass
class MaskGITGeneratorConfig(GeneratorConfig):
    label_smoothing: float = MISSING
    sampling: MaskGITSamplingConfig = field(default_factory=MaskGITSamplingConfig)


@dataclass
class MARSamplingConfig(SamplingConfig):
    steps: int = MISSING  # K autoregressive steps (order=random); raster order uses one per token
    diffusion_steps: int = MISSING  # S steps of the DDPM reverse chain per token


@dataclass
class MARGeneratorConfig(GeneratorConfig):
    order: str = MISSING  # random (bidirectional MAR) | raster (causal AR with diffusion loss)
    backbone: str = MISSING  # shared (genarena's AdaLN transformer) | vit (MAR's plain ViT)
    encoder_depth: int | None = None  # default depth; the decoder gets decoder_depth
    decoder_depth: int | None = None  # default depth
    buffer_size: int = MISSING  # class-token buffer positions
    mask_ratio_min: float = MISSING  # truncated normal (mean 1, std 0.25) lower bound
    diffusion_width: int | None = None  # the denoiser MLP's width; None: the backbone width (grows with depth)
    diffusion_depth: int = MISSING
    diffusion_timesteps: int = MISSING  # training schedule length (1000)
    diffusion_batch_mul: int = MISSING  # noise draws per token
    noise_schedule: str = MISSING  # cosine | linear
    diffusion_loss: str = MISSING  # eps (MSE on the noise) | learned_sigma (MAR's: + learned variance, VLB term)
    sampling: MARSamplingConfig = field(default_factory=MARSamplingConfig)


# ------------------------------------------------------------------------------ training & infra
@dataclass
class OptimConfig:
    lr: float = MISSING
    betas: list[float] = MISSING
    weight_decay: float = MISSING
    warmup_steps: int = MISSING
    schedule: str = MISSING  # cosine | linear | constant
    min_lr_ratio: float = MISSING  # final lr = lr * min_lr_ratio
    grad_clip: float = MISSING  # 0 disables


@dataclass
class TrainerConfig:
    """Every key but :data:`GENARENA_TRAINER_KEYS` is passed to ``lightning.Trainer``; a key added with
    ``+trainer.<key>=`` must be a ``Trainer`` argument."""

    accelerator: str = MISSING
    devices: Any = MISSING
    num_nodes: int = MISSING
    strategy: str = MISSING
    precision: str = MISSING
    max_steps: int = MISSING
    max_time: str | None = None  # wall-clock budget "DD:HH:MM:SS"; training stops at max_steps or max_time
    val_check_interval: int = MISSING  # steps between validations
    check_val_every_n_epoch: int | None = None  # None: validation follows val_check_interval in steps
    limit_train_batches: Any = MISSING
    limit_val_batches: Any = MISSING
    num_sanity_val_steps: int = MISSING
    log_every_n_steps: int = MISSING
    enable_progress_bar: bool = MISSING
    enable_model_summary: bool = MISSING
    deterministic: bool = MISSING
    accumulate_grad_batches: int = MISSING
    fast_dev_run: Any = MISSING  # conf/debug/fast_dev_run.yaml
    overfit_batches: Any = MISSING  # conf/debug/overfit.yaml
    detect_anomaly: bool = MISSING  # conf/debug/anomaly.yaml
    profiler: str | None = None  # conf/debug/profiler.yaml: simple | advanced | pytorch
    compile: bool = MISSING  # torch.compile the model (GPU)
    num_threads: int | None = None  # torch CPU threads; None keeps torch's default


@dataclass
class LoggerConfig:
    name: str = MISSING  # wandb | csv | none
    project: str = MISSING
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    mode: str = MISSING  # auto | online | offline | disabled (wandb only)
    job_type: str | None = None


@dataclass
class LogConfig:
    sample_every_n_steps: int = MISSING  # sample / reconstruction grids; 0 disables
    grid_size: int = MISSING  # images in a grid
    checkpoint_every_n_steps: int = MISSING


@dataclass
class EvalConfig:
    every_n_steps: int = MISSING  # periodic FID during training; 0 disables
    periodic_num_samples: int = MISSING
    num_samples: int = MISSING  # genarena-eval / compare
    batch_size: int = MISSING
    split: str = MISSING  # real split the samples are compared with
    extractor: str = MISSING  # auto | inception | domain
    inception_weights: str | None = None
    metrics: list[str] = MISSING  # fid, isc, kid, prc
    seed: int = MISSING
    checkpoint: str = MISSING  # which checkpoint of a run directory is sampled: best (lowest val/loss) | last
    fid_statistics_file: str | None = None  # FID against precomputed statistics (an .npz with mu, sigma)


@dataclass
class ClassifierConfig:
    ch: int = MISSING
    feature_dim: int = MISSING
    max_steps: int = MISSING
    lr: float = MISSING
    batch_size: int = MISSING


@dataclass
class PathsConfig:
    runs_dir: str = MISSING
    cache_dir: str = MISSING


@dataclass
class RootConfig:
    task: str = MISSING  # tokenizer | classifier | generator
    experiment_name: str = MISSING
    seed: int = MISSING
    sweep_name: str | None = None  # set by conf/sweep presets
    force: bool = False  # re-run a job even if an identical finished run exists
    resume: str = MISSING  # auto | never | a run directory or .ckpt to continue (genarena.training.job)
    data: Any = MISSING
    tokenizer: Any = MISSING
    generator: Any = MISSING
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    callbacks: dict[str, Any] = field(default_factory=dict)  # conf/callbacks: name -> {_target_: ..., ...} or null
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


# ------------------------------------------------------------------------------ command roots
def _all_sampling_fields() -> list[tuple[str, Any]]:
    """Every sampling option of every paradigm, in declaration order, each made optional."""
    seen: dict[str, Any] = {}
    for schema in (SamplingConfig, *(c.__dataclass_fields__["sampling"].default_factory
                                     for c in SCHEMAS["generator"].values())):
        hints = get_type_hints(schema)
        for f in fields(schema):
            seen.setdefault(f.name, hints[f.name] | None)
    return list(seen.items())


@dataclass
class SampleCommandConfig:
    """``conf/sample.yaml``: ``genarena-sample``."""

    ckpt: str = MISSING  # generator run directory or checkpoint file
    n: int = MISSING
    labels: Any = MISSING  # balanced | a list of class ids (cycled to n)
    seed: int = MISSING
    out: str | None = None  # default <run dir>/samples/sample_seed<seed>
    batch_size: int = MISSING
    ema: bool = MISSING  # the run's averaged (EMA) weights when it kept them
    checkpoint: str = MISSING  # best | last, for a run directory
    device: str | None = None  # cpu, cuda, cuda:1 ...; None: cuda when available
    format: str = MISSING  # genarena | adm (samples.npz with arr_0 uint8 N x H x W x 3 and arr_1 labels)
    sampling: Any = MISSING  # overrides of the run's generator.sampling (see SamplingOverrides)


@dataclass
class EvalCommandConfig(RootConfig):
    """``conf/eval.yaml``: ``genarena-eval`` (the root config plus what to evaluate)."""

    ckpt: str | None = None  # a generator run directory or checkpoint: sample eval.num_samples images
    images: str | None = None  # or saved images: a folder of PNGs or an .npz, compared with `data=`
    n: int | None = None  # images=: evaluate the first n (None: all)
    write_statistics: str | None = None  # instead: write the FID statistics of data's eval.split to this .npz
    out: str | None = None  # where metrics.json goes (default <run or images dir>/eval/<extractor>_n<N>_seed<s>)
    ema: bool = MISSING
    device: str | None = None
    sampling: Any = MISSING


@dataclass
class ImportCommandConfig:
    """``conf/import.yaml``: ``genarena-import`` (official checkpoints -> a genarena run directory)."""

    model: str = MISSING  # var | mar | llamagen (genarena.official.importer.OFFICIAL_MODELS)
    tokenizer_file: str = MISSING  # the released tokenizer checkpoint
    generator_file: str = MISSING  # the released generator checkpoint
    out: str = MISSING  # the run directory to create; it must not exist
    ema: bool = MISSING  # mar: the EMA weights (model_ema) rather than the trained ones (model)
    heads: int | None = None  # attention heads (mar, llamagen) when not a released size; None: the released size's
    ffn_multiple_of: int = MISSING  # llamagen: SwiGLU hidden width rounded up to a multiple of this
    norm_groups: int = MISSING  # the tokenizer's GroupNorm groups (not stored in the file)
    data: Any = MISSING  # the imported run's data (conf/data/imagenet.yaml): what genarena-eval compares with


@dataclass
class CompareOptions:
    name: str | None = None  # report <out>/..; None: the data option's name
    out: str | None = None  # report directory; None: outputs/compare/<name> (ignored by git)
    runs_dir: str = MISSING  # the jobs' paths.runs_dir is <runs_dir>/<name>
    tokenizers: list[str] = MISSING
    generators: list[str] = MISSING
    tokenizer_args: Any = MISSING  # config values of the stage-1 jobs (nested, like conf/config.yaml)
    generator_args: Any = MISSING  # config values of the stage-2 jobs
    num_samples: int = MISSING
    batch_size: int = MISSING
    grid_per_class: int = MISSING
    seed: int = MISSING  # the sampling seed of the evaluation
    seeds: list[int] = MISSING  # training seeds: every paradigm is trained and evaluated once per seed


@dataclass
class CompareCommandConfig(RootConfig):
    """``conf/compare.yaml``: ``genarena-compare`` (the root config, whose values every job gets, plus options)."""

    compare: CompareOptions = field(default_factory=CompareOptions)


SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"image": DataConfig, "synthetic": SyntheticDataConfig},
    "tokenizer": {"vq": VQTokenizerConfig, "msvq": MSVQTokenizerConfig, "kl": KLTokenizerConfig},
    "generator": {
        "var": VARGeneratorConfig,
        "ar": ARGeneratorConfig,
        "maskgit": MaskGITGeneratorConfig,
        "mar": MARGeneratorConfig,
    },
}

# ``sampling.<key>=`` of genarena-sample / genarena-eval: the union of every paradigm's sampling options
SamplingOverrides = make_dataclass("SamplingOverrides",
                                   [(n, t, field(default=None)) for n, t in _all_sampling_fields()])


def first_set(*values: Any) -> Any:
    """Resolver ``${genarena.first_set:a,b,...}``: the first value that is not None."""
    return next((v for v in values if v is not None), None)


JOB_DIR_READABLE_CHARS = 80  # the readable part of a sweep job's directory name is cut (at an item) to fit this


def config_digest(cfg: DictConfig, length: int = 8) -> str:
    """sha1 of a config's resolved content without its ``hydra`` node (what a job computes)."""
    content = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    try:
        container = OmegaConf.to_container(content, resolve=True, enum_to_str=True)
    except Exception:  # an interpolation that needs the running app: hash it as written
        container = OmegaConf.to_container(content, resolve=False, enum_to_str=True)
    blob = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:length]


def job_dir_name(num: Any, override_dirname: Any, *, _root_: DictConfig) -> str:
    """Resolver ``${genarena.job_dir:${hydra.job.num},${hydra.job.override_dirname}}``: a sweep job's directory,
    ``<num>_<overrides, readable>_<hash of the job's whole config>``. The hash covers every key (tokenizer
    checkpoint, trainer, task included), so two sweeps that differ anywhere never share a directory; the
    readable part drops characters a path should not hold (backslashes, quotes, colons) and is cut to fit."""
    readable = re.sub(r"[^A-Za-z0-9._+=,-]", "", str(override_dirname))
    if len(readable) > JOB_DIR_READABLE_CHARS:
        readable = readable[:JOB_DIR_READABLE_CHARS].rsplit("+", 1)[0]
    return "_".join(part for part in (str(num), readable, config_digest(_root_)) if part)


def slurm_tasks_per_node(devices: Any, gpus_per_node: Any) -> int:
    """Resolver ``${genarena.tasks_per_node:${trainer.devices},${.gpus_per_node}}`` of the SLURM launcher: one task
    per device Lightning uses on a node (Lightning runs one process per device and checks that SLURM started as
    many). ``trainer.devices`` a number: that many; a list of device ids: its length; ``-1`` or ``auto`` (every
    device of the node, ``trainer=ddp`` / ``fsdp``): ``gpus_per_node``, the GPUs SLURM gives each node."""
    if isinstance(devices, str) and devices.lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, int) and devices >= 1:
        return devices
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        return len(devices)
    if devices in (-1, "auto"):
        return int(gpus_per_node)
    raise ConfigError(f"trainer.devices={devices!r} cannot set SLURM's tasks per node; give a number of devices, a "
                      "list of device ids, or -1 / auto with hydra.launcher.gpus_per_node=<GPUs per node>")


def unique_suffix() -> str:
    """Resolver ``${genarena.unique:}``: 4 random hex digits, so two runs started in the same second differ."""
    return secrets.token_hex(2)


def register_configs() -> None:
    """Store the schemas under ``schema/<group>/<name>`` and register resolvers (idempotent)."""
    from hydra.core.config_store import ConfigStore  # lazy: model code imports this module's constants

    if not OmegaConf.has_resolver("genarena.first_set"):
        OmegaConf.register_new_resolver("genarena.first_set", first_set)
    if not OmegaConf.has_resolver("genarena.job_dir"):
        OmegaConf.register_new_resolver("genarena.job_dir", job_dir_name)
    if not OmegaConf.has_resolver("genarena.tasks_per_node"):
        OmegaConf.register_new_resolver("genarena.tasks_per_node", slurm_tasks_per_node)
    if not OmegaConf.has_resolver("genarena.unique"):
        OmegaConf.register_new_resolver("genarena.unique", unique_suffix, use_cache=True)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=RootConfig)
    cs.store(name="schema_sample", node=SampleCommandConfig)
    cs.store(name="schema_eval", node=EvalCommandConfig)
    cs.store(name="schema_compare", node=CompareCommandConfig)
    cs.store(name="schema_import", node=ImportCommandConfig)
    cs.store(group="schema", name="sampling_overrides", node=SamplingOverrides)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)


def config_dir() -> Path:
    """The ``conf/`` directory: ``$GENARENA_CONFIG_DIR``; else the copy installed inside the package (a
    wheel); else the one beside ``src/`` (an editable install or a checkout)."""
    env = os.environ.get("GENARENA_CONFIG_DIR")
    package = Path(__file__).resolve().parent
    candidates = [Path(env)] if env else []
    candidates += [package / "conf", package.parents[1] / "conf"]
    for path in candidates:
        if (path / "config.yaml").is_file():
            return path
    raise ConfigError(
        "cannot find genarena's conf/ directory (looked in "
        + ", ".join(str(p) for p in candidates)
        + "); reinstall genarena (`pip install genarena` ships it) or set GENARENA_CONFIG_DIR"
    )


def compose(config_name: str = "config", overrides: Sequence[str] = (), return_hydra_config: bool = False
            ) -> DictConfig:
    """A root config of ``conf/`` (``config``, ``sample``, ``eval``, ``compare``) with Hydra overrides, inside or
    outside a running Hydra app (with its ``hydra`` node if asked); a bad key or option raises
    :class:`ConfigError` naming it."""
    from hydra import compose as hydra_compose  # lazy: model code imports this module without Hydra
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    register_configs()
    try:
        if GlobalHydra.instance().is_initialized():
            return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
    except HydraException as e:
        raise ConfigError(f"{' '.join(overrides)}: {e}") from None


def to_dict(node: DictConfig) -> dict[str, Any]:
    """A config node as plain, resolved Python containers (what checkpoints and results store)."""
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)


# ------------------------------------------------------------------------------------ validation
def check_choice(key: str, value: Any, accepted: Sequence[Any]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``accepted``."""
    if value not in accepted:
        raise ConfigError(f"{key}={value!r} is not accepted; choose one of {', '.join(map(str, accepted))}")


def _check_has_schema(cfg: DictConfig, group: str) -> None:
    node = cfg.get(group)
    if node is None:
        return
    accepted = tuple(SCHEMAS[group].values())
    if OmegaConf.get_type(node) not in accepted:
        raise ConfigError(
            f"the selected {group} option does not declare a schema; start its YAML with "
            f"`defaults: [/schema/{group}/<kind>@_here_, _self_]` (kinds: {', '.join(SCHEMAS[group])})"
        )


def check_eval_options(ev: DictConfig) -> None:
    """Accepted values of the ``eval`` block."""
    check_choice("eval.checkpoint", ev.checkpoint, CHECKPOINT_SELECTIONS)
    check_choice("eval.extractor", ev.extractor, EVAL_EXTRACTORS)
    check_choice("eval.split", ev.split, EVAL_SPLITS)
    bad = [m for m in ev.metrics if m not in EVAL_METRICS]
    if bad or not ev.metrics:
        raise ConfigError(f"eval.metrics={list(ev.metrics)} is not accepted; choose a non-empty subset of "
                          f"{', '.join(EVAL_METRICS)}")
    for key in ("num_samples", "batch_size", "periodic_num_samples"):
        if ev[key] < 1:
            raise ConfigError(f"eval.{key}={ev[key]} must be at least 1")


def check_callbacks(callbacks: DictConfig) -> None:
    """Each ``callbacks.<name>`` is null or a node with a ``_target_`` (and an optional ``enabled`` flag)."""
    for name, node in callbacks.items():
        if node is None:
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(f"callbacks.{name}={node!r}: give a node with a _target_ (a Lightning callback class), "
                              "or null to drop it")


def _check_range(key: str, value: Any, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, accepted: str) -> None:
    ok = value is not None and (low is None or (value > low if low_open else value >= low)) \
        and (high is None or (value < high if high_open else value <= high))
    if not ok:
        raise ConfigError(f"{key}={value!r} is not accepted; {accepted}")


def check_tokenizer(tok: DictConfig, resolution: int) -> None:
    """Value checks of a tokenizer config (its network, codebook and bottleneck) for images of ``resolution``
    pixels, each naming the bad value. A generator's tokenizer (``tokenizer.ckpt``) is rebuilt from its
    checkpoint, so the scales are not checked against the grid then."""
    from genarena.tokenizers.base import NETS  # lazy: the registries import torch; checks run when a job starts

    check_choice("tokenizer.recon_loss", tok.recon_loss, RECON_LOSSES)
    check_choice("tokenizer.net", tok.net, NETS)
    _check_range("tokenizer.ch", tok.ch, 1, accepted="a positive width")
    if not tok.ch_mult or any(m < 1 for m in tok.ch_mult):
        raise ConfigError(f"tokenizer.ch_mult={list(tok.ch_mult)} is not accepted; one positive multiplier per level")
    _check_range("tokenizer.num_res_blocks", tok.num_res_blocks, 1, accepted="at least 1 block per level")
    _check_range("tokenizer.z_channels", tok.z_channels, 1, accepted="at least 1 latent channel")
    grid, rem = divmod(resolution, 2 ** (len(tok.ch_mult) - 1))
    if rem:
        raise ConfigError(f"data.resolution={resolution} is not divisible by the tokenizer's downsampling "
                          f"2**(len(ch_mult)-1)={2 ** (len(tok.ch_mult) - 1)}")
    ldm = tok.ldm
    if tok.net == "ldm":
        if ldm.embed_dim is not None:
            _check_range("tokenizer.ldm.embed_dim", ldm.embed_dim, 1,
                         accepted="null (z_channels) or a positive dimension")
        if ldm.quant_conv_kernel < 1 or ldm.quant_conv_kernel % 2 == 0:
            raise ConfigError(f"tokenizer.ldm.quant_conv_kernel={ldm.quant_conv_kernel!r} is not accepted; "
                              "an odd kernel size (VAR: 3, MAR and LlamaGen: 1)")
        widths = [tok.ch * m for m in tok.ch_mult]
        if ldm.norm_groups < 1 or any(w % ldm.norm_groups for w in [tok.ch, *widths]):
            raise ConfigError(f"tokenizer.ldm.norm_groups={ldm.norm_groups!r} is not accepted; it must divide every "
                              f"width of the encoder/decoder, ch * ch_mult = {widths}")
    elif ldm.embed_dim is not None:
        raise ConfigError(f"tokenizer.ldm.embed_dim={ldm.embed_dim!r} needs tokenizer.net=ldm: the genarena net has no "
                          "quant_conv, its code dimension is z_channels")
    if tok.name in ("vq", "msvq"):
        _check_range("tokenizer.vocab_size", tok.vocab_size, 2, accepted="at least 2 codes")
        _check_range("tokenizer.beta", tok.beta, 0, accepted="a commitment weight >= 0")
        _check_range("tokenizer.entropy_weight", tok.entropy_weight, 0, accepted="a weight >= 0 (0 disables)")
        _check_range("tokenizer.entropy_temperature", tok.entropy_temperature, 0, low_open=True,
                     accepted="a temperature > 0")
        _check_range("tokenizer.dead_code_threshold", tok.dead_code_threshold, 0,
                     accepted="a usage share >= 0 (0 never restarts a code)")
        _check_range("tokenizer.usage_decay", tok.usage_decay, 0, 1, high_open=True, accepted="an EMA decay in [0, 1)")
    if tok.name == "msvq":
        from genarena.tokenizers.msvq import SCALE_NORMS  # lazy: as above

        check_choice("tokenizer.scale_norm", tok.scale_norm, SCALE_NORMS)
        pn = list(tok.patch_nums)
        if not pn or pn[0] < 1 or pn != sorted(set(pn)):
            raise ConfigError(f"tokenizer.patch_nums={pn} is not accepted; positive scale sides that increase strictly")
        if not tok.ckpt and pn[-1] != grid:
            raise ConfigError(f"tokenizer.patch_nums={pn} must increase strictly and end at the latent grid side "
                              f"{grid} (data.resolution={resolution} / downsampling)")
        _check_range("tokenizer.quant_resi", tok.quant_resi, 0, 1,
                     accepted="r in [0, 1] of phi(h) = (1 - r) h + r conv(h) (VAR: 0.5; 0: no phi conv)")
        _check_range("tokenizer.share_quant_resi", tok.share_quant_resi, 0, len(pn),
                     accepted=f"0 (one phi conv per scale) up to the number of scales, {len(pn)} (VAR: 4)")
    if tok.name == "kl":
        _check_range("tokenizer.kl_weight", tok.kl_weight, 0, accepted="a weight >= 0")
        if tok.scale_factor is not None:
            _check_range("tokenizer.scale_factor", tok.scale_factor, 0, low_open=True,
                         accepted="null (measured after training) or a factor > 0 (MAR's KL-16: 0.2325)")


def validate(cfg: DictConfig) -> None:
    """Semantic checks that types cannot express; raises :class:`ConfigError` naming the bad value."""
    from genarena.data.sources import SOURCES, check_imagefolder_root  # lazy: torch loads only when a job starts
    from genarena.generators import GENERATORS
    from genarena.tokenizers import TOKENIZERS

    check_choice("task", cfg.task, TASKS)
    for group in SCHEMAS:
        _check_has_schema(cfg, group)
    check_choice("data.name", cfg.data.name, tuple(SOURCES))
    check_choice("data.channels", cfg.data.channels, DATA_CHANNELS)
    if cfg.data.name == "imagefolder":  # a missing data root is the first thing to report
        check_imagefolder_root(cfg.data)
    check_choice("tokenizer.name", cfg.tokenizer.name, tuple(TOKENIZERS))
    check_tokenizer(cfg.tokenizer, cfg.data.resolution)
    check_choice("generator.name", cfg.generator.name, tuple(GENERATORS))
    check_choice("generator.sampling.cfg_schedule", cfg.generator.sampling.cfg_schedule, CFG_SCHEDULES)
    if cfg.generator.name == "var":
        from genarena.generators.var import INITS  # lazy: as above

        check_choice("generator.init", cfg.generator.init, INITS)
    if cfg.generator.name == "ar":
        from genarena.generators.ar import BACKBONES, POS_EMBEDS  # lazy: as above

        check_choice("generator.pos_embed", cfg.generator.pos_embed, POS_EMBEDS)
        check_choice("generator.backbone", cfg.generator.backbone, BACKBONES)
        if cfg.generator.backbone == "llama" and cfg.generator.pos_embed != "rope2d":
            raise ConfigError(f"generator.pos_embed={cfg.generator.pos_embed!r} is not accepted with "
                              "generator.backbone=llama (LlamaGen's GPT uses 2-D RoPE); choose rope2d")
        if cfg.generator.ffn_multiple_of < 1:
            raise ConfigError(f"generator.ffn_multiple_of={cfg.generator.ffn_multiple_of} must be at least 1")
    if cfg.generator.name == "mar":
        from genarena.generators import VARIANTS  # lazy: as above
        from genarena.generators.diffusion import DIFFUSION_LOSSES, NOISE_SCHEDULES
        from genarena.generators.mar import BACKBONES as MAR_BACKBONES

        check_choice("generator.order", cfg.generator.order, tuple(VARIANTS["mar"][1]))
        check_choice("generator.backbone", cfg.generator.backbone, MAR_BACKBONES)
        check_choice("generator.noise_schedule", cfg.generator.noise_schedule, NOISE_SCHEDULES)
        check_choice("generator.diffusion_loss", cfg.generator.diffusion_loss, DIFFUSION_LOSSES)
        steps, timesteps = cfg.generator.sampling.diffusion_steps, cfg.generator.diffusion_timesteps
        if not 1 <= steps <= timesteps:
            raise ConfigError(f"generator.sampling.diffusion_steps={steps} must lie in 1..{timesteps} "
                              f"(generator.diffusion_timesteps, the training chain it is respaced from)")
    check_choice("optim.schedule", cfg.optim.schedule, OPTIM_SCHEDULES)
    check_choice("logger.name", cfg.logger.name, LOGGERS)
    check_choice("logger.mode", cfg.logger.mode, LOGGER_MODES)
    check_eval_options(cfg.eval)
    check_callbacks(cfg.callbacks)
    if cfg.task == "generator" and not cfg.tokenizer.ckpt:
        raise ConfigError(
            "task=generator needs a trained tokenizer: pass tokenizer.ckpt=<checkpoint or run directory> "
            f"(train one with `genarena-train task=tokenizer tokenizer={cfg.tokenizer.name}`)"
        )
