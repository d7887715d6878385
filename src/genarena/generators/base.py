"""The ``Generator`` interface: what a paradigm must provide to be compared.

A generator is built against a (frozen) tokenizer whose ``kind`` it declares in ``requires``; it
never owns the tokenizer's weights (a reference is kept outside the module tree). It also declares its cell
of the order x head matrix: ``order`` (raster | masked | next-scale) and ``head_kind`` (ce | diffusion, the
modules of :mod:`genarena.generators.heads`).

- ``loss(tokens, labels) -> {"loss": scalar, ...diagnostics}``
- ``sample(labels, *, cfg, cfg_schedule, temperature, top_k, top_p, generator, ...) -> tokens``
  in the tokenizer's layout, ready for ``tokenizer.decode``.
- ``flops_per_image(train, **sampling)``: analytic FLOPs (2 per multiply-add) of one training
  image (forward + backward = 3x forward) or of sampling one image.
- ``sampling_steps(**sampling)``: sequential network evaluations per image.
- ``complete(tokens, known, labels, **sampling) -> tokens``: zero-shot editing (in-/out-painting). ``tokens`` are
  the edited images' tokens in the tokenizer's layout (``tokenizer.encode``), ``known (B, h, w)`` a boolean mask
  over the final token grid (True: keep). Known tokens come back exactly as given; the others are generated
  conditioned on them and on ``labels``. Each paradigm conditions on the known tokens as its order allows
  (next-scale: every scale's known part is the input's; raster: a known token is forced when reached, so nothing
  after the current position is seen; masked orders: known tokens start revealed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
import torch.nn as nn
from torch import Tensor

from genarena.errors import IncompatibleTokenizerError
from genarena.generators.backbone import Transformer, drop_labels, init_weights, resolve_width
from genarena.generators.heads import HEAD_TOKENS, CEHead
from genarena.tokenizers import TOKENIZERS
from genarena.tokenizers.base import Tokenizer


def tokenizer_of_kind(kind: str) -> str:
    """The tokenizer option (``conf/tokenizer/<name>.yaml``) whose tokens are of ``kind``."""
    return next(name for name, cls in TOKENIZERS.items() if cls.kind == kind)


def check_tokenizer_kind(paradigm: str, requires: str, tokenizer: Tokenizer, head: str | None = None) -> None:
    """:class:`IncompatibleTokenizerError` unless ``tokenizer`` gives the token kind the paradigm ``requires``; when
    its ``head`` cannot model the tokenizer's tokens at all (CE on vectors, diffusion on indices), the message says
    so."""
    if tokenizer.kind == requires:
        return
    needed = tokenizer_of_kind(requires)
    if head is not None and tokenizer.kind not in HEAD_TOKENS[head]:
        other = next(h for h, kinds in HEAD_TOKENS.items() if tokenizer.kind in kinds)
        raise IncompatibleTokenizerError(
            f"generator '{paradigm}' has the {head} head, which models {' / '.join(HEAD_TOKENS[head])} tokens, but "
            f"the tokenizer gives {tokenizer.kind} tokens ({type(tokenizer).__name__}; they need the {other} head): "
            f"give it a {requires} tokenizer (tokenizer={needed}; train one with `genarena-train task=tokenizer "
            f"tokenizer={needed}`), or choose generator.head={other}")
    raise IncompatibleTokenizerError(
        f"generator '{paradigm}' needs a {requires} tokenizer (tokenizer={needed}), but got a "
        f"{tokenizer.kind} one ({type(tokenizer).__name__}); train one with "
        f"`genarena-train task=tokenizer tokenizer={needed}`")


class Generator(nn.Module, ABC):
    name: ClassVar[str]
    requires: ClassVar[str]  # tokenizer kind: discrete | multiscale | continuous | multiscale_continuous
    order: ClassVar[str]  # the generation order, one axis of the order x head matrix: raster | masked | next-scale
    head_kind: ClassVar[str]  # the per-token head, the other axis (genarena.generators.heads): ce | diffusion

    def __init__(self, tokenizer: Tokenizer, num_classes: int, depth: int, width: int | None, heads: int | None,
                 mlp_ratio: float, qk_norm: bool, drop_path: float, dropout: float, class_dropout: float,
                 gate_init: float) -> None:
        super().__init__()
        check_tokenizer_kind(self.name, self.requires, tokenizer, self.head_kind)
        self._tokenizer = (tokenizer,)  # a reference, not a submodule: its weights stay the tokenizer's
        self.num_classes, self.null_class, self.class_dropout = num_classes, num_classes, class_dropout
        self.depth = depth
        self.width, self.heads = resolve_width(depth, width, heads)
        self.mlp_ratio, self.qk_norm, self.dropout, self.drop_path, self.gate_init = (
            mlp_ratio, qk_norm, dropout, drop_path, gate_init)
        self.class_embed = nn.Embedding(num_classes + 1, self.width)  # last row: the null class

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer[0]

    def make_transformer(self, depth: int | None = None, **options: Any) -> Transformer:
        """The shared backbone at this generator's size; ``options`` are the backbone's own (``k_bias``)."""
        return Transformer(depth or self.depth, self.width, self.heads, self.mlp_ratio, self.qk_norm,
                           self.dropout, self.drop_path, self.gate_init, **options)

    def make_head(self, out_dim: int) -> CEHead:
        """The cross-entropy head (:mod:`genarena.generators.heads`) at this generator's width."""
        return CEHead(self.width, out_dim)

    def finish_init(self, head: CEHead | None = None) -> None:
        """Apply VAR's init to everything built so far and shrink the head (initial loss ~ ln V)."""
        init_weights(self, self.width, self.depth)
        if head is not None:
            head.proj.weight.data.mul_(0.02)
            head.proj.bias.data.zero_()

    def condition(self, labels: Tensor) -> Tensor:
        """Class embedding ``(B, C)``; in training, labels drop to the null class with ``class_dropout``."""
        if self.training:
            labels = drop_labels(labels, self.class_dropout, self.null_class)
        return self.class_embed(labels)

    def guidance_labels(self, labels: Tensor, cfg: float) -> tuple[Tensor, bool]:
        """``[labels; null]`` when guidance is on (the batch is doubled), else ``labels``."""
        if cfg == 0:
            return labels, False
        return torch.cat([labels, torch.full_like(labels, self.null_class)]), True

    def num_params(self, non_embedding: bool = False) -> int:
        """Trainable parameters; ``non_embedding`` leaves out embedding tables and position embeddings
        (Kaplan et al.'s N)."""
        total = 0
        for name, p in self.named_parameters():
            if non_embedding and ("embed" in name.rsplit(".", 1)[-1] or name.startswith(("class_embed", "token_embed"))
                                  or "pos_embed" in name or "lvl_embed" in name):
                continue
            total += p.numel()
        return total

    @abstractmethod
    def loss(self, tokens: Tensor, labels: Tensor) -> dict[str, Tensor]: ...

    @abstractmethod
    def sample(self, labels: Tensor, *, cfg: float, cfg_schedule: str, temperature: float, top_k: int,
               top_p: float, generator: torch.Generator | None = None, **kwargs: Any) -> Tensor: ...

    @abstractmethod
    def flops_per_image(self, train: bool, **sampling: Any) -> float: ...

    def extra_image_grids(self, labels: Tensor, *, generator: torch.Generator | None = None,
                          **sampling: Any) -> dict[str, list[Tensor]]:
        """Paradigm-specific image grids shown during training, ``{name: rows of (n, C, H, W) images}``
        (VAR: the coarse-to-fine progression); none by default."""
        return {}

    @abstractmethod
    def sampling_steps(self, **sampling: Any) -> int: ...

    @abstractmethod
    def complete(self, tokens: Tensor, known: Tensor, labels: Tensor, *, cfg: float, cfg_schedule: str,
                 temperature: float, top_k: int, top_p: float, generator: torch.Generator | None = None,
                 **kwargs: Any) -> Tensor:
        """Tokens like ``tokens`` with ``known (B, h, w)`` positions kept exactly and the rest generated under
        ``labels`` (module docstring); sampling options as :meth:`sample`."""

    def check_known(self, tokens: Tensor, known: Tensor, labels: Tensor) -> Tensor:
        """``known (B, h, w)`` as a bool ``(B, h*w)`` mask in raster order on ``tokens``' device; a mask that does
        not match the token grid or the batch is a ``ValueError`` naming both shapes."""
        h, w = self.tokenizer.grid
        if known.dtype != torch.bool or tuple(known.shape) != (len(tokens), h, w) or len(labels) != len(tokens):
            raise ValueError(f"complete() needs known as a bool (B, {h}, {w}) mask over the token grid and one label "
                             f"per image; got known {known.dtype} {tuple(known.shape)}, {len(tokens)} token rows and "
                             f"{len(labels)} labels")
        return known.to(tokens.device).flatten(1)

    @property
    def tokens_per_image(self) -> int:
        return self.tokenizer.seq_len


def rows_by_count(mask: Tensor) -> list[Tensor]:
    """Row indices of ``mask (B, N)`` grouped by their number of True entries (ascending count): samplers whose
    schedules count the tokens to generate run each group on its own."""
    counts = mask.sum(1)
    return [(counts == c).nonzero().flatten() for c in counts.unique()]


def accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    return (logits.argmax(-1) == targets).float().mean()
