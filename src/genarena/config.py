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
from dataclasses import dataclass, field, fields, is_dataclass, make_dataclass
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
# trainer.precision: lightning.Trainer's accepted values (tests/test_bad_inputs.py pins them to Lightning's own list)
TRAINER_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine",
                      "transformer-engine-float16", "32", "16", "64", "bf16")
MAX_SEED = 2**32 - 1  # lightning.seed_everything's range: outside [0, 2**32 - 1] it silently seeds 0 instead
MAX_TIME_FORMAT = re.compile(r"^\d+:\d{1,2}:\d{1,2}:\d{1,2}$")  # trainer.max_time, "DD:HH:MM:SS"


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
    name: str = MISSING  # vq | msvq | kl | mskl
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


@dataclass
class MSKLTokenizerConfig(KLTokenizerConfig):
    patch_nums: list[int] = MISSING  # side of each scale's token map, small to large, ending at the latent side
    quant_resi: float = MISSING  # r in phi(h) = (1 - r) h + r conv3x3(h) on the upsampled scales; 0: no phi conv
    share_quant_resi: int = MISSING  # number of partially shared phi convs; 0: one per upsampled scale
    pyramid_weight: float = MISSING  # weight of the prefix loss that trains phi (partial sums approach the latent)


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
    name: str = MISSING  # var | ar | maskgit | mar | var_diffusion
    head: str = MISSING  # ce | diffusion: the per-token head; the other value names the other cell of the order
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
    diffusion_steps: int = MISSING  # S steps of the reverse chain per token
    sampler: str = MISSING  # ddpm (the paper's) | ddim (fewer steps; eta sets its noise)
    eta: float = MISSING  # sampler=ddim: 0 deterministic .. 1 (the DDPM chain's posterior variance)


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


@dataclass
class VARDiffusionSamplingConfig(SamplingConfig):
    diffusion_steps: int = MISSING  # S steps of the DDPM reverse chain per token


@dataclass
class VARDiffusionGeneratorConfig(GeneratorConfig):
    k_bias: bool = MISSING  # learned bias on the attention keys (as var)
    init: str = MISSING  # shared (the only one: init=official is VAR's, for its CE head)
    diffusion_width: int | None = None  # the denoiser MLP's width; None: the backbone width
    diffusion_depth: int = MISSING
    diffusion_timesteps: int = MISSING  # training schedule length (1000)
    diffusion_batch_mul: int = MISSING  # noise draws per token
    noise_schedule: str = MISSING  # cosine | linear
    diffusion_loss: str = MISSING  # eps | learned_sigma
    sampling: VARDiffusionSamplingConfig = field(default_factory=VARDiffusionSamplingConfig)


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
    compile: bool = MISSING  # torch.compile the training step: a generator's loss(), a tokenizer's forward
    num_threads: int | None = None  # torch CPU threads; None keeps torch's default


@dataclass
class LoggerConfig:
    name: str = MISSING  # wandb | csv | none
    project: str = MISSING
    entity: str | None = None
    group: str | None = None  # W&B group (one per study); None: the sweep's name, else the experiment's
    run_name: str | None = None  # W&B run name; None: <paradigm>-d<depth>, <tokenizer> or the task
    tags: list[str] = field(default_factory=list)
    mode: str = MISSING  # auto | online | offline | disabled (wandb only)
    job_type: str | None = None
    init_timeout: float | None = None  # wandb: seconds wandb.init may take before the run falls back to offline
    log_model: bool = False  # wandb: the run's checkpoints as the W&B artifact model-<run id>


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
    min_val_acc: float = MISSING  # a cached classifier below this validation accuracy is refused (not a cache key)


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
    allow_unsafe_load: bool = MISSING  # load trusted old checkpoints that need full unpickling (can run code)
    match_params: int | None = None  # generators: the width whose non-embedding parameters come closest to this
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
    allow_unsafe_load: bool = MISSING  # a trusted old checkpoint that needs full unpickling (can run code)
    sampling: Any = MISSING  # overrides of the run's generator.sampling (see SamplingOverrides)


@dataclass
class EditCommandConfig:
    """``conf/edit.yaml``: ``genarena-edit`` (zero-shot in-painting, out-painting and relabelling)."""

    ckpt: str = MISSING  # generator run directory or checkpoint file
    images: str = MISSING  # val (the run's validation split, class-balanced) | an .npz | a folder of PNGs
    n: int = MISSING  # images to edit
    mask: str = MISSING  # the region to generate: center | left | right | top | bottom | box:x0,y0,x1,y1 | a PNG
    relabel: int | None = None  # None: each image's own label; a class id: every masked region under that class
    paste: bool = MISSING  # the known pixels from the original (else the decoder's, from the kept tokens)
    seed: int = MISSING
    out: str | None = None  # default <run dir>/edits/<mask>_seed<seed>
    batch_size: int = MISSING
    ema: bool = MISSING
    checkpoint: str = MISSING  # best | last, for a run directory
    device: str | None = None
    allow_unsafe_load: bool = MISSING
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
    edit_samples: int = MISSING  # editing table: validation images in-/out-painted per paradigm (0: off)


@dataclass
class MatrixOptions:
    name: str | None = None  # the report's name; None: the data option's name
    runs: str | None = None  # the sweep's directory; None: <paths.runs_dir>/matrix_<data> (+sweep=matrix's)
    out: str | None = None  # report directory; None: outputs/matrix/<name> (ignored by git)
    num_samples: int = MISSING
    batch_size: int = MISSING
    grid_per_class: int = MISSING
    seed: int = MISSING  # the sampling seed of the evaluation


@dataclass
class MatrixCommandConfig(RootConfig):
    """``conf/matrix.yaml``: ``genarena-matrix`` (the root config, for data and evaluation, plus its options)."""

    matrix: MatrixOptions = field(default_factory=MatrixOptions)


@dataclass
class CompareCommandConfig(RootConfig):
    """``conf/compare.yaml``: ``genarena-compare`` (the root config, whose values every job gets, plus options)."""

    compare: CompareOptions = field(default_factory=CompareOptions)


SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"image": DataConfig, "synthetic": SyntheticDataConfig},
    "tokenizer": {"vq": VQTokenizerConfig, "msvq": MSVQTokenizerConfig, "kl": KLTokenizerConfig,
                  "mskl": MSKLTokenizerConfig},
    "generator": {
        "var": VARGeneratorConfig,
        "ar": ARGeneratorConfig,
        "maskgit": MaskGITGeneratorConfig,
        "mar": MARGeneratorConfig,
        "var_diffusion": VARDiffusionGeneratorConfig,
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
    cs.store(name="schema_edit", node=EditCommandConfig)
    cs.store(name="schema_compare", node=CompareCommandConfig)
    cs.store(name="schema_matrix", node=MatrixCommandConfig)
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
    check_range("eval.every_n_steps", ev.every_n_steps, 0, accepted="0 (off) or the steps between periodic FIDs")
    check_seed("eval.seed", ev.seed)


def check_callbacks(callbacks: DictConfig) -> None:
    """Each ``callbacks.<name>`` is null or a node with a ``_target_`` (and an optional ``enabled`` flag)."""
    for name, node in callbacks.items():
        if node is None:
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(f"callbacks.{name}={node!r}: give a node with a _target_ (a Lightning callback class), "
                              "or null to drop it")


def check_range(key: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, accepted: str) -> None:
    """:class:`ConfigError` naming ``key=value`` and what is ``accepted`` unless ``low <= value <= high`` (or ``<``)."""
    ok = value is not None and (low is None or (value > low if low_open else value >= low)) \
        and (high is None or (value < high if high_open else value <= high))
    if not ok:
        raise ConfigError(f"{key}={value!r} is not accepted; {accepted}")


def _check_optional(key: str, value: Any, low: float, accepted: str) -> None:
    if value is not None:
        check_range(key, value, low, accepted=accepted)


def _check_fraction(key: str, value: Any, *, one: bool = False, accepted: str) -> None:
    """``value`` in [0, 1) (``one``: [0, 1])."""
    check_range(key, value, 0, 1, high_open=not one, accepted=accepted)


def check_seed(key: str, value: Any) -> None:
    check_range(key, value, 0, MAX_SEED, accepted=f"an integer seed in [0, {MAX_SEED}]")


def check_path_name(key: str, value: Any) -> None:
    """A name that becomes part of a path under ``paths.runs_dir``: relative, without ``..``."""
    parts = Path(str(value)).parts
    if not value or Path(str(value)).is_absolute() or ".." in parts or "\\" in str(value):
        raise ConfigError(f"{key}={value!r} is not accepted; a name (or relative sub-path) inside paths.runs_dir, "
                          "without '..', a leading '/' or backslashes")


def check_known_keys(cfg: DictConfig, prefix: str = "") -> None:
    """Every key of a schema-typed node is a field of its schema, so that a typo added with ``+key=value`` is
    rejected like any unknown key. ``trainer`` may hold extra ``lightning.Trainer`` arguments (checked against
    Trainer's signature when a job starts); free-form nodes (``callbacks``, ``compare.*_args``) are not walked."""
    schema = OmegaConf.get_type(cfg)
    keys = [k for k in cfg.keys() if not (prefix == "" and k == "hydra")]
    if is_dataclass(schema) and prefix != "trainer.":
        allowed = {f.name for f in fields(schema)}
        extra = [k for k in keys if k not in allowed]
        if extra:
            where = f"'{prefix.rstrip('.')}'" if prefix else "the root config"
            raise ConfigError(f"{prefix}{extra[0]} is not a config key (unknown keys are rejected, also when added "
                              f"with +{prefix}{extra[0]}=...); {where} has: {', '.join(sorted(allowed))}")
    for key in keys:
        node = cfg._get_node(key)
        if isinstance(node, DictConfig):
            check_known_keys(node, f"{prefix}{key}.")


def check_sampling(prefix: str, sampling: Any) -> None:
    """Ranges of sampling options (a paradigm's ``generator.sampling`` or the ``sampling.<key>=`` overrides of a
    command); keys that are absent or None are not checked."""
    values = {k: v for k, v in (sampling.items() if sampling is not None else ()) if v is not None}
    ranges = {
        "cfg": (0, "a guidance weight w >= 0 (0: no guidance)"),
        "temperature": (0, "a temperature >= 0 (0: greedy)"),
        "top_k": (0, "0 (off) or the number of logits kept"),
        "steps": (1, "at least 1 decoding step"),
        "diffusion_steps": (1, "at least 1 diffusion step"),
        "choice_temperature": (0, "a temperature >= 0"),
    }
    for key, (low, accepted) in ranges.items():
        if key in values:
            check_range(f"{prefix}.{key}", values[key], low, accepted=accepted)
    if "top_p" in values:
        _check_fraction(f"{prefix}.top_p", values["top_p"], one=True, accepted="a probability mass in [0, 1] "
                                                                               "(0 or 1: off)")
    if "cfg_schedule" in values:
        check_choice(f"{prefix}.cfg_schedule", values["cfg_schedule"], CFG_SCHEDULES)
    if "sampler" in values:
        from genarena.generators.diffusion import SAMPLERS  # lazy: model code imports torch

        check_choice(f"{prefix}.sampler", values["sampler"], SAMPLERS)
    if "eta" in values:
        _check_fraction(f"{prefix}.eta", values["eta"], one=True, accepted="a DDIM noise scale in [0, 1]")


def check_data(d: DictConfig) -> None:
    """Ranges of the ``data`` group."""
    check_range("data.resolution", d.resolution, 1, accepted="a positive image side in pixels")
    check_range("data.batch_size", d.batch_size, 1, accepted="at least 1 image per batch")
    check_range("data.num_workers", d.num_workers, 0, accepted="0 (load in the main process) or more workers")
    _check_fraction("data.val_fraction", d.val_fraction, accepted="a held-out fraction in [0, 1)")
    check_seed("data.split_seed", d.split_seed)
    if "num_classes" in d:
        check_range("data.num_classes", d.num_classes, 1, accepted="at least 1 class")
        check_range("data.num_images", d.num_images, 2, accepted="at least 2 images (a train and a val one)")


def check_generator(g: DictConfig) -> None:
    """Ranges of the ``generator`` group and its sampling options (choices are checked in :func:`validate`)."""
    check_range("generator.depth", g.depth, 1, accepted="at least 1 transformer block (the scaling knob)")
    _check_optional("generator.width", g.width, 1, accepted="null (64 * depth) or a positive width")
    _check_optional("generator.heads", g.heads, 1, accepted="null (depth) or a positive number of heads")
    from genarena.generators.backbone import resolve_width  # lazy: model code imports torch; checks run at job start

    try:
        resolve_width(g.depth, g.width, g.heads)
    except ValueError as e:
        raise ConfigError(f"generator.width={g.width} / generator.heads={g.heads}: {e}; choose a width that is a "
                          "multiple of the heads (null: 64 * depth and depth heads)") from None
    check_range("generator.mlp_ratio", g.mlp_ratio, 0, low_open=True, accepted="a ratio > 0")
    for key in ("drop_path", "dropout", "class_dropout"):
        _check_fraction(f"generator.{key}", g[key], accepted="a probability in [0, 1)")
    check_range("generator.gate_init", g.gate_init, 0, accepted="a scale >= 0")
    for key, accepted in (("embed_dropout", "a probability in [0, 1)"), ("label_smoothing", "a smoothing in [0, 1)")):
        if key in g:
            _check_fraction(f"generator.{key}", g[key], accepted=accepted)
    if "mask_ratio_min" in g:
        _check_fraction("generator.mask_ratio_min", g.mask_ratio_min, one=True, accepted="a ratio in [0, 1]")
    for key, low, accepted in (("init_adaln", 0, "a multiplier >= 0"), ("init_adaln_gamma", 0, "a multiplier >= 0"),
                               ("init_head", 0, "a multiplier >= 0"), ("buffer_size", 1, "at least 1 position"),
                               ("diffusion_depth", 1, "at least 1 block"),
                               ("diffusion_timesteps", 1, "at least 1 step"),
                               ("diffusion_batch_mul", 1, "at least 1 noise draw per token")):
        if key in g:
            check_range(f"generator.{key}", g[key], low, accepted=accepted)
    for key in ("encoder_depth", "decoder_depth", "diffusion_width"):
        if key in g:
            _check_optional(f"generator.{key}", g[key], 1, accepted="null (the default) or a positive value")
    check_sampling("generator.sampling", g.sampling)


def check_head(g: DictConfig) -> None:
    """``generator.head`` is a head, and the paradigm's own (another head names another cell of the order x head
    matrix: :func:`genarena.generators.cells.resolve_head` rewrites such a config before a job validates it)."""
    from genarena.generators import VARIANTS, generator_class  # lazy: as above
    from genarena.generators.heads import HEADS

    check_choice("generator.head", g.head, HEADS)
    if g.name in VARIANTS:
        key, classes = VARIANTS[g.name]
        check_choice(f"generator.{key}", g[key], tuple(classes))
    cls, _ = generator_class(to_dict(g))
    if g.head != cls.head_kind:
        raise ConfigError(f"generator.head={g.head!r}: generator={g.name} has the {cls.head_kind} head; the "
                          f"{cls.order} x {g.head} cell is another paradigm (genarena.generators.cells.CELLS), which "
                          "genarena-train resolves before validating (genarena.generators.cells.resolve_head)")


def check_optim(o: DictConfig) -> None:
    check_range("optim.lr", o.lr, 0, low_open=True, accepted="a learning rate > 0")
    if len(o.betas) != 2 or any(not 0 <= b < 1 for b in o.betas):
        raise ConfigError(f"optim.betas={list(o.betas)} is not accepted; two Adam betas in [0, 1)")
    check_range("optim.weight_decay", o.weight_decay, 0, accepted="a decay >= 0")
    check_range("optim.warmup_steps", o.warmup_steps, 0, accepted="0 or more warm-up steps")
    _check_fraction("optim.min_lr_ratio", o.min_lr_ratio, one=True, accepted="a ratio in [0, 1] of the peak lr")
    check_range("optim.grad_clip", o.grad_clip, 0, accepted="0 (off) or a gradient-norm bound > 0")


def check_trainer(t: DictConfig) -> None:
    """Ranges of genarena's ``trainer`` keys (Lightning checks the arguments added with ``+trainer.<key>=``)."""
    check_range("trainer.max_steps", t.max_steps, 1, accepted="a positive step budget (the learning-rate schedule "
                 "decays over it; -1, Lightning's 'no limit', would train forever at the schedule's final lr)")
    check_range("trainer.val_check_interval", t.val_check_interval, 1, accepted="the steps between validations, "
                 "at least 1")
    check_choice("trainer.precision", t.precision, TRAINER_PRECISIONS)
    if t.max_time is not None and not MAX_TIME_FORMAT.match(str(t.max_time)):
        raise ConfigError(f"trainer.max_time={t.max_time!r} is not accepted; a wall-clock budget DD:HH:MM:SS "
                          "(00:02:30:00) or null")
    for key in ("num_nodes", "accumulate_grad_batches", "log_every_n_steps"):
        check_range(f"trainer.{key}", t[key], 1, accepted="at least 1")
    _check_optional("trainer.check_val_every_n_epoch", t.check_val_every_n_epoch, 1, accepted="null or at least 1")
    _check_optional("trainer.num_threads", t.num_threads, 1, accepted="null (torch's default) or at least 1 thread")
    check_range("trainer.num_sanity_val_steps", t.num_sanity_val_steps, -1, accepted="-1 (all), 0 or more batches")
    train, val = t.limit_train_batches, t.limit_val_batches
    if not ((isinstance(train, float) and 0 < train <= 1) or (isinstance(train, int) and train >= 1)):
        raise ConfigError(f"trainer.limit_train_batches={train!r} is not accepted; a fraction of the batches in (0, 1] "
                          "or a number of batches, at least 1")
    if not ((isinstance(val, float) and 0 <= val <= 1) or (isinstance(val, int) and val >= 0)):
        raise ConfigError(f"trainer.limit_val_batches={val!r} is not accepted; a fraction of the batches in [0, 1] "
                          "or a number of batches (0: no validation)")


def check_infrastructure(cfg: DictConfig) -> None:
    """Ranges of the root keys and of the optim, trainer, log and classifier groups, and the names that become paths."""
    check_seed("seed", cfg.seed)
    _check_optional("match_params", cfg.match_params, 1, accepted="null (the configured width) or a positive number "
                    "of non-embedding parameters")
    check_path_name("experiment_name", cfg.experiment_name)
    if cfg.sweep_name is not None:
        check_path_name("sweep_name", cfg.sweep_name)
    check_optim(cfg.optim)
    check_trainer(cfg.trainer)
    check_range("log.sample_every_n_steps", cfg.log.sample_every_n_steps, 0, accepted="0 (off) or a step interval")
    check_range("log.grid_size", cfg.log.grid_size, 1, accepted="at least 1 image")
    check_range("log.checkpoint_every_n_steps", cfg.log.checkpoint_every_n_steps, 0,
                 accepted="0 (off) or a step interval")
    check_classifier(cfg.classifier)


def check_classifier(c: DictConfig) -> None:
    for key in ("ch", "feature_dim", "max_steps", "batch_size"):
        check_range(f"classifier.{key}", c[key], 1, accepted="at least 1")
    check_range("classifier.lr", c.lr, 0, low_open=True, accepted="a learning rate > 0")
    _check_fraction("classifier.min_val_acc", c.min_val_acc, one=True, accepted="a validation accuracy in [0, 1]")


def check_tokenizer(tok: DictConfig, resolution: int) -> None:
    """Value checks of a tokenizer config (its network, codebook and bottleneck) for images of ``resolution``
    pixels, each naming the bad value. A generator's tokenizer (``tokenizer.ckpt``) is rebuilt from its
    checkpoint, so the scales are not checked against the grid then."""
    from genarena.tokenizers.base import NETS  # lazy: the registries import torch; checks run when a job starts

    check_choice("tokenizer.recon_loss", tok.recon_loss, RECON_LOSSES)
    check_choice("tokenizer.net", tok.net, NETS)
    check_range("tokenizer.ch", tok.ch, 1, accepted="a positive width")
    if not tok.ch_mult or any(m < 1 for m in tok.ch_mult):
        raise ConfigError(f"tokenizer.ch_mult={list(tok.ch_mult)} is not accepted; one positive multiplier per level")
    check_range("tokenizer.num_res_blocks", tok.num_res_blocks, 1, accepted="at least 1 block per level")
    check_range("tokenizer.z_channels", tok.z_channels, 1, accepted="at least 1 latent channel")
    grid, rem = divmod(resolution, 2 ** (len(tok.ch_mult) - 1))
    if rem:
        raise ConfigError(f"data.resolution={resolution} is not divisible by the tokenizer's downsampling "
                          f"2**(len(ch_mult)-1)={2 ** (len(tok.ch_mult) - 1)}")
    ldm = tok.ldm
    if tok.net == "ldm":
        if ldm.embed_dim is not None:
            check_range("tokenizer.ldm.embed_dim", ldm.embed_dim, 1,
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
        check_range("tokenizer.vocab_size", tok.vocab_size, 2, accepted="at least 2 codes")
        check_range("tokenizer.beta", tok.beta, 0, accepted="a commitment weight >= 0")
        check_range("tokenizer.entropy_weight", tok.entropy_weight, 0, accepted="a weight >= 0 (0 disables)")
        check_range("tokenizer.entropy_temperature", tok.entropy_temperature, 0, low_open=True,
                     accepted="a temperature > 0")
        check_range("tokenizer.dead_code_threshold", tok.dead_code_threshold, 0,
                     accepted="a usage share >= 0 (0 never restarts a code)")
        check_range("tokenizer.usage_decay", tok.usage_decay, 0, 1, high_open=True, accepted="an EMA decay in [0, 1)")
    if tok.name == "msvq":
        from genarena.tokenizers.msvq import SCALE_NORMS  # lazy: as above

        check_choice("tokenizer.scale_norm", tok.scale_norm, SCALE_NORMS)
    if tok.name in ("msvq", "mskl"):
        pn = list(tok.patch_nums)
        if not pn or pn[0] < 1 or pn != sorted(set(pn)):
            raise ConfigError(f"tokenizer.patch_nums={pn} is not accepted; positive scale sides that increase strictly")
        if not tok.ckpt and pn[-1] != grid:
            raise ConfigError(f"tokenizer.patch_nums={pn} must increase strictly and end at the latent grid side "
                              f"{grid} (data.resolution={resolution} / downsampling)")
        check_range("tokenizer.quant_resi", tok.quant_resi, 0, 1,
                     accepted="r in [0, 1] of phi(h) = (1 - r) h + r conv(h) (VAR: 0.5; 0: no phi conv)")
        phied = len(pn) if tok.name == "msvq" else len(pn) - 1  # mskl: the last (full-size) scale takes no phi
        check_range("tokenizer.share_quant_resi", tok.share_quant_resi, 0, phied,
                     accepted=f"0 (one phi conv per scale) up to the number of scales with a phi, {phied} (VAR: 4)")
    if tok.name == "mskl":
        check_range("tokenizer.pyramid_weight", tok.pyramid_weight, 0, accepted="a weight >= 0 (0: phi stays as "
                     "initialised; the scales still sum back to the latent)")
    if tok.name in ("kl", "mskl"):
        check_range("tokenizer.kl_weight", tok.kl_weight, 0, accepted="a weight >= 0")
        if tok.scale_factor is not None:
            check_range("tokenizer.scale_factor", tok.scale_factor, 0, low_open=True,
                         accepted="null (measured after training) or a factor > 0 (MAR's KL-16: 0.2325)")


def validate(cfg: DictConfig) -> None:
    """Semantic checks that types cannot express; raises :class:`ConfigError` naming the bad value."""
    from genarena.data.sources import SOURCES, check_imagefolder_root  # lazy: torch loads only when a job starts
    from genarena.generators import GENERATORS
    from genarena.tokenizers import TOKENIZERS

    check_choice("task", cfg.task, TASKS)
    check_known_keys(cfg)
    for group in SCHEMAS:
        _check_has_schema(cfg, group)
    check_infrastructure(cfg)
    check_data(cfg.data)
    check_choice("data.name", cfg.data.name, tuple(SOURCES))
    check_choice("data.channels", cfg.data.channels, DATA_CHANNELS)
    if cfg.data.name == "imagefolder":  # a missing data root is the first thing to report
        check_imagefolder_root(cfg.data)
    check_choice("tokenizer.name", cfg.tokenizer.name, tuple(TOKENIZERS))
    check_tokenizer(cfg.tokenizer, cfg.data.resolution)
    check_choice("generator.name", cfg.generator.name, tuple(GENERATORS))
    check_generator(cfg.generator)
    check_head(cfg.generator)
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
        from genarena.generators.mar import BACKBONES as MAR_BACKBONES

        check_choice("generator.order", cfg.generator.order, tuple(VARIANTS["mar"][1]))
        check_choice("generator.backbone", cfg.generator.backbone, MAR_BACKBONES)
    if cfg.generator.name == "var_diffusion":
        check_choice("generator.init", cfg.generator.init, ("shared",))
    if cfg.generator.name in ("mar", "var_diffusion"):
        from genarena.generators.diffusion import DIFFUSION_LOSSES, NOISE_SCHEDULES  # lazy: as above

        check_choice("generator.noise_schedule", cfg.generator.noise_schedule, NOISE_SCHEDULES)
        check_choice("generator.diffusion_loss", cfg.generator.diffusion_loss, DIFFUSION_LOSSES)
        steps, timesteps = cfg.generator.sampling.diffusion_steps, cfg.generator.diffusion_timesteps
        if not 1 <= steps <= timesteps:
            raise ConfigError(f"generator.sampling.diffusion_steps={steps} must lie in 1..{timesteps} "
                              f"(generator.diffusion_timesteps, the training chain it is respaced from)")
    check_choice("optim.schedule", cfg.optim.schedule, OPTIM_SCHEDULES)
    check_choice("logger.name", cfg.logger.name, LOGGERS)
    check_choice("logger.mode", cfg.logger.mode, LOGGER_MODES)
    if cfg.logger.log_model and cfg.logger.name != "wandb":
        raise ConfigError(f"logger.log_model=true logs checkpoints as W&B artifacts, but logger={cfg.logger.name}; "
                          "use logger=wandb (or drop logger.log_model)")
    check_eval_options(cfg.eval)
    check_callbacks(cfg.callbacks)
    if cfg.task == "generator" and not cfg.tokenizer.ckpt:
        raise ConfigError(
            "task=generator needs a trained tokenizer: pass tokenizer.ckpt=<checkpoint or run directory> "
            f"(train one with `genarena-train task=tokenizer tokenizer={cfg.tokenizer.name}`)"
        )
