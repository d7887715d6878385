"""MAR's diffusion loss: a small per-token denoiser and its DDPM noise schedule.

For a token ``x0 (D,)`` with condition ``z (C,)`` from the transformer (Li et al. 2024, eq. 1-2):

    t ~ U{0..T-1},  eps ~ N(0, I),  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps
    L(z, x0) = || eps - eps_theta(x_t | t, z) ||^2

averaged over ``batch_mul`` draws of (t, eps) per token. ``eps_theta`` is an MLP of residual blocks
with AdaLN on ``t_embed + z_embed``. Sampling runs the DDPM reverse chain on ``S`` evenly respaced
steps; the noise added at each step is multiplied by a temperature (0 = deterministic).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch import Tensor


def make_betas(schedule: str, timesteps: int) -> Tensor:
    """``cosine`` (Nichol & Dhariwal 2021, s = 0.008, betas <= 0.999) or ``linear`` (Ho et al. 2020)."""
    if schedule == "cosine":
        s = 0.008
        t = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64) / timesteps
        abar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    if schedule == "linear":
        scale = 1000 / timesteps
        return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)
    raise ValueError(f"noise_schedule={schedule!r}; choose cosine or linear")


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding ``(N,) -> (N, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlockAdaLN(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale, gate = self.ada(c).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class DenoiserMLP(nn.Module):
    """``eps_theta(x_t (N, D) | t (N,), z (N, C)) -> (N, D)``."""

    FREQ_DIM = 256

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int) -> None:
        super().__init__()
        self.width, self.depth, self.token_dim, self.cond_dim = width, depth, token_dim, cond_dim
        self.time_embed = nn.Sequential(nn.Linear(self.FREQ_DIM, width), nn.SiLU(), nn.Linear(width, width))
        self.cond_embed = nn.Linear(cond_dim, width)
        self.input_proj = nn.Linear(token_dim, width)
        self.blocks = nn.ModuleList(ResBlockAdaLN(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, eps=1e-6, elementwise_affine=False)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, token_dim)
        for m in (self.final_ada[1], self.out):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, t: Tensor, z: Tensor) -> Tensor:
        c = self.time_embed(timestep_embedding(t, self.FREQ_DIM)) + self.cond_embed(z)
        h = self.input_proj(x)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        return self.out(self.final_norm(h) * (1 + scale) + shift)

    def flops(self) -> float:
        """Forward FLOPs for one token."""
        w = self.width
        embed = 2 * (self.FREQ_DIM * w + w * w) + 2 * self.cond_dim * w + 2 * self.token_dim * w
        blocks = self.depth * 2 * (2 * w * w + 3 * w * w)
        final = 2 * (2 * w * w) + 2 * w * self.token_dim
        return embed + blocks + final


class DiffusionLoss(nn.Module):
    """Per-token denoising loss and sampler (module docstring)."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, timesteps: int, batch_mul: int,
                 schedule: str) -> None:
        super().__init__()
        self.net = DenoiserMLP(token_dim, cond_dim, width, depth)
        self.timesteps, self.batch_mul = timesteps, batch_mul
        betas = make_betas(schedule, timesteps)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float(), persistent=False)
        # per-dimension max |x0| seen in training: the reverse chain clips its x0 estimates to it
        # ("clip_denoised" to the data's own range). Without it the cosine schedule's last step
        # (abar ~ 1e-9) turns an eps error of 1e-3 into an x0 error of ~1e3.
        self.register_buffer("x0_bound", torch.zeros(token_dim))

    def forward(self, x0: Tensor, z: Tensor) -> Tensor:
        """Mean epsilon-prediction loss for tokens ``x0 (N, D)`` with conditions ``z (N, C)``."""
        if self.training:
            with torch.no_grad():
                self.x0_bound.copy_(torch.maximum(self.x0_bound, x0.detach().abs().amax(0)))
        x0, z = x0.repeat(self.batch_mul, 1), z.repeat(self.batch_mul, 1)
        t = torch.randint(0, self.timesteps, (x0.shape[0],), device=x0.device)
        eps = torch.randn_like(x0)
        abar = self.alphas_cumprod[t][:, None]
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
        return (self.net(x_t, t, z) - eps).pow(2).mean()

    def respaced(self, steps: int) -> tuple[Tensor, Tensor]:
        """``steps`` timesteps evenly spread over the schedule (ascending) and their ``abar``."""
        ts = torch.linspace(0, self.timesteps - 1, steps, device=self.alphas_cumprod.device).round().long()
        return ts, self.alphas_cumprod[ts]

    @torch.no_grad()
    def sample(self, z: Tensor, steps: int, temperature: float, cfg: float | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """Draw tokens ``(N, D)`` for conditions ``z``. With ``cfg`` not None, ``z`` is ``[cond; uncond]``
        ``(2N, C)`` and ``eps = eps_c + cfg (eps_c - eps_u)``."""
        n = z.shape[0] // 2 if cfg is not None else z.shape[0]
        d = self.net.token_dim
        x = torch.randn(n, d, generator=generator, device=z.device)
        ts, abar = self.respaced(steps)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        for i in reversed(range(steps)):
            xin = torch.cat([x, x]) if cfg is not None else x
            t = ts[i].expand(xin.shape[0])
            eps = self.net(xin, t, z)
            if cfg is not None:
                eps_c, eps_u = eps.chunk(2)
                eps = eps_c + cfg * (eps_c - eps_u)
            a, a_prev = abar[i], abar_prev[i]
            beta = 1 - a / a_prev
            x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
            if self.x0_bound.any():
                x0 = torch.maximum(torch.minimum(x0, self.x0_bound), -self.x0_bound)
            mean = (a_prev.sqrt() * beta / (1 - a)) * x0 + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a)) * x
            if i > 0:
                var = beta * (1 - a_prev) / (1 - a)
                noise = torch.randn(x.shape, generator=generator, device=x.device)
                x = mean + temperature * var.sqrt() * noise
            else:
                x = mean
        return x

    def flops_per_token(self, train: bool, steps: int = 100, cfg: float = 0.0) -> float:
        if train:
            return 3 * self.batch_mul * self.net.flops()
        return (2 if cfg else 1) * steps * self.net.flops()
