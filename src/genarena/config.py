"""Typed schemas for every config group, registered with Hydra's ConfigStore.

Values live in the YAML files under ``conf/``; these dataclasses only fix the *shape*: which keys
exist and of which type. Every option file starts with ``defaults: [/schema/<group>/<kind>@_here_]``
so that an unknown key or a wrong type fails at composition time with the full key named, and an
unknown option fails with Hydra's list of the available ones. :func:`validate` adds the semantic
checks a type cannot express (accepted values of string choices, cross-group consistency).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from genarena.errors import ConfigError


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
class TokenizerConfig:
    name: str = MISSING  # vq | msvq | kl
    ckpt: str | None = None  # a trained tokenizer (file or run directory); generators need it
    ch: int = MISSING  # base width of the conv encoder/decoder
    ch_mult: list[int] = MISSING  # width multipliers per level; downsampling = 2 ** (len - 1)
    num_res_blocks: int = MISSING
    z_channels: int = MISSING  # latent channels = code dimension (vq/msvq) or token_dim (kl)
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
    share_quant_resi: int = MISSING  # number of partially shared phi convs
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
    pass


@dataclass
class ARGeneratorConfig(GeneratorConfig):
    pos_embed: str = MISSING  # rope2d | learned
    embed_dropout: float = MISSING  # token dropout on input embeddings (LlamaGen)


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
    ema_decay: float | None = None  # EMA of generator weights used for sampling; None disables


@dataclass
class TrainerConfig:
    accelerator: str = MISSING
    devices: Any = MISSING
    num_nodes: int = MISSING
    strategy: str = MISSING
    precision: str = MISSING
    max_steps: int = MISSING
    max_time: str | None = None  # wall-clock budget "DD:HH:MM:SS"; training stops at max_steps or max_time
    val_check_interval: int = MISSING  # steps between validations
    limit_val_batches: float = MISSING
    log_every_n_steps: int = MISSING
    enable_progress_bar: bool = MISSING
    deterministic: bool = MISSING
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
    resume: str | None = None  # a checkpoint to resume training from
    data: Any = MISSING
    tokenizer: Any = MISSING
    generator: Any = MISSING
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


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

TASKS = ("tokenizer", "classifier", "generator")


def first_set(*values: Any) -> Any:
    """Resolver ``${genarena.first_set:a,b,...}``: the first value that is not None."""
    return next((v for v in values if v is not None), None)


def register_configs() -> None:
    """Store the schemas under ``schema/<group>/<name>`` and register resolvers (idempotent)."""
    if not OmegaConf.has_resolver("genarena.first_set"):
        OmegaConf.register_new_resolver("genarena.first_set", first_set)
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=RootConfig)
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            cs.store(group=f"schema/{group}", name=name, node=node)


def config_dir() -> Path:
    """The ``conf/`` directory: ``$GENARENA_CONFIG_DIR``, else the one beside ``src/``."""
    import os

    env = os.environ.get("GENARENA_CONFIG_DIR")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / "conf", Path.cwd() / "conf"]
    for path in candidates:
        if (path / "config.yaml").is_file():
            return path
    raise ConfigError(
        "cannot find genarena's conf/ directory (looked in "
        + ", ".join(str(p) for p in candidates)
        + "); install the project with `pip install -e .` from its checkout or set GENARENA_CONFIG_DIR"
    )


def _check_choice(key: str, value: Any, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ConfigError(f"{key}={value!r} is not accepted; choose one of {', '.join(accepted)}")


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


def validate(cfg: DictConfig) -> None:
    """Semantic checks that types cannot express; raises :class:`ConfigError` naming the bad value."""
    from genarena.data.sources import SOURCES
    from genarena.generators import GENERATORS
    from genarena.metrics.fidelity import check_eval_options
    from genarena.tokenizers import TOKENIZERS

    _check_choice("task", cfg.task, TASKS)
    for group in SCHEMAS:
        _check_has_schema(cfg, group)
    _check_choice("data.name", cfg.data.name, tuple(SOURCES))
    _check_choice("data.channels", str(cfg.data.channels), ("1", "3"))
    if cfg.data.name == "imagefolder":  # a missing data root is the first thing to report
        from genarena.data.sources import check_imagefolder_root

        check_imagefolder_root(cfg.data)
    _check_choice("tokenizer.name", cfg.tokenizer.name, tuple(TOKENIZERS))
    _check_choice("tokenizer.recon_loss", cfg.tokenizer.recon_loss, ("l1", "l2"))
    if cfg.tokenizer.name == "msvq":
        from genarena.tokenizers.msvq import SCALE_NORMS

        _check_choice("tokenizer.scale_norm", cfg.tokenizer.scale_norm, SCALE_NORMS)
    _check_choice("generator.name", cfg.generator.name, tuple(GENERATORS))
    _check_choice("generator.sampling.cfg_schedule", cfg.generator.sampling.cfg_schedule, ("constant", "linear"))
    if cfg.generator.name == "ar":
        _check_choice("generator.pos_embed", cfg.generator.pos_embed, ("rope2d", "learned"))
    if cfg.generator.name == "mar":
        from genarena.generators import VARIANTS
        from genarena.generators.diffusion import DIFFUSION_LOSSES, NOISE_SCHEDULES
        from genarena.generators.mar import BACKBONES

        _check_choice("generator.order", cfg.generator.order, tuple(VARIANTS["mar"][1]))
        _check_choice("generator.backbone", cfg.generator.backbone, BACKBONES)
        _check_choice("generator.noise_schedule", cfg.generator.noise_schedule, NOISE_SCHEDULES)
        _check_choice("generator.diffusion_loss", cfg.generator.diffusion_loss, DIFFUSION_LOSSES)
        steps, timesteps = cfg.generator.sampling.diffusion_steps, cfg.generator.diffusion_timesteps
        if not 1 <= steps <= timesteps:
            raise ConfigError(f"generator.sampling.diffusion_steps={steps} must lie in 1..{timesteps} "
                              f"(generator.diffusion_timesteps, the training chain it is respaced from)")
    _check_choice("optim.schedule", cfg.optim.schedule, ("cosine", "linear", "constant"))
    _check_choice("logger.name", cfg.logger.name, ("wandb", "csv", "none"))
    _check_choice("logger.mode", cfg.logger.mode, ("auto", "online", "offline", "disabled"))
    check_eval_options(cfg.eval)
    if cfg.task == "generator" and not cfg.tokenizer.ckpt:
        raise ConfigError(
            "task=generator needs a trained tokenizer: pass tokenizer.ckpt=<checkpoint or run directory> "
            f"(train one with `genarena-train task=tokenizer tokenizer={cfg.tokenizer.name}`)"
        )
    grid, rem = divmod(cfg.data.resolution, 2 ** (len(cfg.tokenizer.ch_mult) - 1))
    if rem:
        raise ConfigError(
            f"data.resolution={cfg.data.resolution} is not divisible by the tokenizer's downsampling "
            f"2**(len(ch_mult)-1)={2 ** (len(cfg.tokenizer.ch_mult) - 1)}"
        )
    if cfg.tokenizer.name == "msvq" and not cfg.tokenizer.ckpt:
        pn = list(cfg.tokenizer.patch_nums)
        if pn != sorted(set(pn)) or pn[-1] != grid:
            raise ConfigError(
                f"tokenizer.patch_nums={pn} must increase strictly and end at the latent grid side {grid} "
                f"(data.resolution={cfg.data.resolution} / downsampling)"
            )
