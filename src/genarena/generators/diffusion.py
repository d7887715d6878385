"""MAR's diffusion loss: a small per-token denoiser, its noise schedule and DDPM sampler (Li et al. 2024).

For a token ``x0 (D,)`` with condition ``z (C,)`` from the transformer (eq. 1-2), ``abar_t = prod_s<=t (1 - beta_s)``:

    t ~ U{0..T-1},  eps ~ N(0, I),  x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps

``loss=eps``: ``L = ||eps - eps_theta(x_t | t, z)||^2 / D``.

``loss=learned_sigma`` (MAR's ``DiffLoss``: improved DDPM's hybrid loss, Nichol & Dhariwal 2021): the denoiser
also outputs ``v (D,)``, which sets the reverse step's variance between the posterior's ``beta~_t`` and ``beta_t``,
``log s_t^2 = (1 + v)/2 log beta_t + (1 - v)/2 log beta~_t``, and

    L    = ||eps - eps_theta||^2 / D + L_vb                 (L_vb sees eps_theta detached: it trains v only)
    L_vb = KL(q(x_{t-1} | x_t, x0) || N(mu_theta, s_t^2)) / (D ln 2)      t > 0
    L_vb = -log N_disc(x0; mu_theta, s_t^2) / (D ln 2)                     t = 0 (bins of width 2/255)

with ``x0_hat = (x_t - sqrt(1 - abar_t) eps_theta) / sqrt(abar_t)`` and ``mu_theta = c1_t x0_hat + c2_t x_t`` (the
posterior mean). Both losses average over ``batch_mul`` draws of ``(t, eps)`` per token.

``eps_theta`` is an MLP of residual blocks with AdaLN on ``t_embed + z_embed`` (MAR's ``SimpleMLPAdaLN``).
Sampling runs the reverse chain on ``S`` respaced steps (timesteps strided evenly over ``0..T-1``, betas
recomputed from ``abar``): ``x_{t-1} = mu_theta + temperature * s_t * noise``, no noise at the last step, ``s_t^2``
the posterior variance (eps) or the learned one. Guidance mixes eps, ``eps_c + w (eps_c - eps_u)``; the learned
variance is the conditional one. ``sampler=ddim`` (Song et al. 2021) runs the same respaced chain deterministically
(``eta = 0``) or with noise ``eta sigma_t`` (``eta = 1``: the DDPM chain with the posterior variance), usually with
fewer steps:

    x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma_t^2) eps_theta + temperature sigma_t noise
    sigma_t = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn as nn
from torch import Tensor

from genarena.generators.sampling import guide

DIFFUSION_LOSSES = ("eps", "learned_sigma")
NOISE_SCHEDULES = ("cosine", "linear")
SAMPLERS = ("ddpm", "ddim")  # ddpm: the paper's ancestral chain | ddim: Song et al.'s, eta sets its noise
INIT_STYLES = ("genarena", "mar")


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
    raise ValueError(f"noise_schedule={schedule!r}; choose one of {', '.join(NOISE_SCHEDULES)}")


def respace(timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps strided evenly over ``0..timesteps-1``, ascending (improved DDPM's ``space_timesteps``
    with one section: the stride ``(T - 1) / (S - 1)`` accumulated, each position rounded half to even)."""
    if not 1 <= steps <= timesteps:
        raise ValueError(f"cannot respace {timesteps} diffusion timesteps into {steps} steps")
    stride = (timesteps - 1) / (steps - 1) if steps > 1 else 1
    taken, position = [], 0.0
    for _ in range(steps):
        taken.append(round(position))
        position += stride
    return taken


class DiffusionChain:
    """Coefficients ``(S,)`` of the chain on kept timesteps ``t`` of the training schedule, computed in float64
    and stored in float32 (as improved DDPM does); ``index`` below is a position in this chain."""

    def __init__(self, betas: Tensor, keep: list[int], device: torch.device | str) -> None:
        abar_kept = torch.cumprod(1 - betas, 0)[keep]
        betas = 1 - abar_kept / torch.cat([abar_kept.new_ones(1), abar_kept[:-1]])  # respaced betas
        self.betas64 = betas
        abar = torch.cumprod(1 - betas, 0)
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        post_var = betas * (1 - abar_prev) / (1 - abar)
        # log of the posterior variance, its first entry (0) replaced by the second
        post_logvar = torch.cat([post_var[1:2], post_var[1:]]).log() if len(keep) > 1 else betas.log()
        f32 = lambda x: x.float().to(device)  # noqa: E731
        self.abar, self.abar_prev, self.post_var = abar, abar_prev, post_var  # float64, CPU: for step_plan
        self.t = torch.tensor(keep, dtype=torch.long, device=device)
        self.sqrt_abar, self.sqrt_one_minus_abar = f32(abar.sqrt()), f32((1 - abar).sqrt())
        self.sqrt_recip_abar, self.sqrt_recipm1_abar = f32((1 / abar).sqrt()), f32((1 / abar - 1).sqrt())
        self.post_logvar, self.log_betas = f32(post_logvar), f32(betas.log())
        self.coef_x0 = f32(betas * abar_prev.sqrt() / (1 - abar))
        self.coef_xt = f32((1 - abar_prev) * (1 - betas).sqrt() / (1 - abar))

    def posterior_mean(self, x0: Tensor, x_t: Tensor, index: Tensor) -> Tensor:
        """Mean of ``q(x_{t-1} | x_t, x0)``, ``(N, D)``."""
        return self.coef_x0[index, None] * x0 + self.coef_xt[index, None] * x_t

    def predict_x0(self, x_t: Tensor, eps: Tensor, index: Tensor) -> Tensor:
        return self.sqrt_recip_abar[index, None] * x_t - self.sqrt_recipm1_abar[index, None] * eps

    def learned_logvar(self, v: Tensor, index: Tensor) -> Tensor:
        """``(1 + v)/2 log beta_t + (1 - v)/2 log beta~_t``, ``(N, D)``."""
        frac = (v + 1) / 2
        return frac * self.log_betas[index, None] + (1 - frac) * self.post_logvar[index, None]

    def step_plan(self, sampler: str, eta: float) -> list[tuple[float, ...]]:
        """Per chain position ``i``, the reverse step's scalars (from float64), for :meth:`DiffusionLoss.sample`:
        ``(1/sqrt(abar), sqrt(1/abar - 1))`` (x0 from eps), then

        - ``ddpm``: ``(coef_x0, coef_xt, posterior std, log beta, clipped posterior log variance)``;
        - ``ddim`` (Song et al. 2021, eq. 12): ``(sqrt(abar_prev), sqrt(1 - abar_prev - sigma^2), sigma)`` with
          ``sigma = eta sqrt((1 - abar_prev) / (1 - abar)) sqrt(1 - abar / abar_prev)``."""
        a, ap = self.abar, self.abar_prev
        head = torch.stack([(1 / a).sqrt(), (1 / a - 1).sqrt()], 1)
        if sampler == "ddpm":
            b = self.betas64
            rest = torch.stack([b * ap.sqrt() / (1 - a), (1 - ap) * (1 - b).sqrt() / (1 - a), self.post_var.sqrt(),
                                self.log_betas.double().cpu(), self.post_logvar.double().cpu()], 1)
        elif sampler == "ddim":
            sigma = eta * ((1 - ap) / (1 - a)).sqrt() * (1 - a / ap).sqrt()
            rest = torch.stack([ap.sqrt(), (1 - ap - sigma ** 2).clamp(min=0).sqrt(), sigma], 1)
        else:
            raise ValueError(f"sampler={sampler!r}; choose one of {', '.join(SAMPLERS)}")
        return [tuple(row) for row in torch.cat([head, rest], 1).tolist()]


def gaussian_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """Elementwise ``KL(N(mean1, e^logvar1) || N(mean2, e^logvar2))`` in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + (logvar1 - logvar2).exp() + (mean1 - mean2) ** 2 * (-logvar2).exp())


def approx_normal_cdf(x: Tensor) -> Tensor:
    """The tanh approximation of the standard normal CDF used by improved DDPM."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_nll(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """Elementwise ``-log P(bin of x)`` in nats for ``N(mean, e^(2 log_scale))`` on bins of width 2/255 over
    ``[-1, 1]``; the outermost bins (``|x| > 0.999``) extend to infinity."""
    inv_std = (-log_scale).exp()
    cdf_plus = approx_normal_cdf(inv_std * (x - mean + 1.0 / 255.0))
    cdf_minus = approx_normal_cdf(inv_std * (x - mean - 1.0 / 255.0))
    log_cdf_plus = cdf_plus.clamp(min=1e-12).log()
    log_one_minus_cdf_minus = (1.0 - cdf_minus).clamp(min=1e-12).log()
    log_delta = (cdf_plus - cdf_minus).clamp(min=1e-12).log()
    return -torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_minus, log_delta))


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
        return torch.addcmul(x, gate, self.mlp(torch.addcmul(shift, self.norm(x), 1 + scale)))


class DenoiserMLP(nn.Module):
    """``eps_theta(x_t (N, D) | t (N,), z (N, C)) -> (N, out_dim)``; ``out_dim`` is ``D``, or ``2D`` with the
    variance output ``v`` after eps."""

    FREQ_DIM = 256

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, out_dim: int) -> None:
        super().__init__()
        self.width, self.depth, self.token_dim, self.cond_dim, self.out_dim = width, depth, token_dim, cond_dim, out_dim
        self.time_embed = nn.Sequential(nn.Linear(self.FREQ_DIM, width), nn.SiLU(), nn.Linear(width, width))
        self.cond_embed = nn.Linear(cond_dim, width)
        self.input_proj = nn.Linear(token_dim, width)
        self.blocks = nn.ModuleList(ResBlockAdaLN(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, eps=1e-6, elementwise_affine=False)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, out_dim)
        self.zero_modulation_and_output()

    def zero_modulation_and_output(self) -> None:
        """AdaLN modulations and the output layer start at zero: every block starts as the identity and the
        denoiser's first output is 0."""
        for m in [b.ada[1] for b in self.blocks] + [self.final_ada[1], self.out]:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def init_weights(self, style: str) -> None:
        """``genarena``: every linear layer truncated normal with the std of the transformer feeding it (VAR's
        ``sqrt(1 / 3C)``, C the condition width), biases 0; ``mar``: MAR's ``SimpleMLPAdaLN`` init (Xavier-uniform
        linears, biases 0, N(0, 0.02) timestep MLP). Both then zero the modulations and the output layer."""
        if style == "genarena":
            std = math.sqrt(1.0 / (3 * self.cond_dim))
            for name, m in self.named_modules():
                if isinstance(m, nn.Linear) and not name.endswith("ada.1"):
                    nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
                    nn.init.zeros_(m.bias)
        elif style == "mar":
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
            nn.init.normal_(self.time_embed[0].weight, std=0.02)
            nn.init.normal_(self.time_embed[2].weight, std=0.02)
        else:
            raise ValueError(f"init style {style!r}; choose one of {', '.join(INIT_STYLES)}")
        self.zero_modulation_and_output()

    def forward(self, x: Tensor, t: Tensor, z: Tensor) -> Tensor:
        return self.run(x, self.condition(z, t))

    def condition(self, z: Tensor, t: Tensor) -> Tensor:
        """The blocks' condition ``time_cond(t) + cond_embed(z)``, ``(N, W)``. ``z`` has ``N`` rows, or ``N / k``
        when each token's ``k`` draws are stacked as ``x0.repeat(k, 1)`` stacks them: then each token's condition
        is embedded once and repeated ``k`` times (the same numbers as embedding the repeated ``z``)."""
        n, m = t.shape[0], z.shape[0]
        if n % m:
            raise ValueError(f"{m} conditions do not divide {n} timesteps: z needs N or N / k rows")
        c = self.cond_embed(z)  # (N / k, W)
        return self.time_cond(t) + (c.repeat(n // m, 1) if n != m else c)  # (N, W)

    def time_cond(self, t: Tensor) -> Tensor:
        """The timestep embedding ``(N,) -> (N, W)`` (added to ``cond_embed(z)``: the blocks' condition). Each
        distinct timestep is embedded once and gathered: a training batch has more rows than the ``T``
        timesteps (``batch_mul`` draws per token)."""
        steps, index = torch.unique(t, return_inverse=True)
        return nn.functional.embedding(index, self.time_embed(timestep_embedding(steps, self.FREQ_DIM)))

    def run(self, x: Tensor, c: Tensor) -> Tensor:
        """The network on ``x (N, D)`` under an embedded condition ``c (N, W)`` -> ``(N, out_dim)``."""
        h = self.input_proj(x)  # (N, W)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        return self.out(torch.addcmul(shift, self.final_norm(h), 1 + scale))  # (N, out_dim)

    def cond_flops(self) -> float:
        """FLOPs of ``cond_embed`` for one token (computed once per token: for all its training draws, for the
        sampler's whole chain)."""
        return 2 * self.cond_dim * self.width

    def run_flops(self) -> float:
        """FLOPs of :meth:`run` for one token: one reverse step of the sampler."""
        w = self.width
        blocks = self.depth * 2 * (2 * w * w + 3 * w * w)
        final = 2 * (2 * w * w) + 2 * w * self.out_dim
        return 2 * self.token_dim * w + blocks + final


class DiffusionLoss(nn.Module):
    """Per-token denoising loss and sampler (module docstring). ``loss`` is ``eps`` or ``learned_sigma``."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, timesteps: int, batch_mul: int,
                 schedule: str, loss: str) -> None:
        super().__init__()
        if loss not in DIFFUSION_LOSSES:
            raise ValueError(f"diffusion loss {loss!r}; choose one of {', '.join(DIFFUSION_LOSSES)}")
        self.learn_sigma = loss == "learned_sigma"
        self.net = DenoiserMLP(token_dim, cond_dim, width, depth, 2 * token_dim if self.learn_sigma else token_dim)
        self.timesteps, self.batch_mul = timesteps, batch_mul
        self.betas = make_betas(schedule, timesteps)  # float64, on the CPU: the chains are computed from it
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - self.betas, 0).float(), persistent=False)
        # per-dimension max |x0| seen in training: the reverse chain clips its x0 estimates to it
        # ("clip_denoised" to the data's own range). Without it the cosine schedule's last step
        # (abar ~ 1e-9) turns an eps error of 1e-3 into an x0 error of ~1e3. Zero: no clipping.
        self.register_buffer("x0_bound", torch.zeros(token_dim))
        self._chains: dict[tuple[int, str], DiffusionChain] = {}
        self._plans: dict[tuple[int, str, str, float], list[tuple[float, ...]]] = {}

    def init_weights(self, style: str) -> None:
        """The denoiser's init: ``genarena`` or ``mar`` (see :meth:`DenoiserMLP.init_weights`)."""
        self.net.init_weights(style)

    def chain(self, steps: int, device: torch.device | str) -> DiffusionChain:
        """The chain of ``steps`` respaced timesteps (``steps = T``: the training chain)."""
        key = (steps, str(device))
        if key not in self._chains:
            self._chains[key] = DiffusionChain(self.betas, respace(self.timesteps, steps), device)
        return self._chains[key]

    # ------------------------------------------------------------------ training
    def forward(self, x0: Tensor, z: Tensor, per_token: bool = False) -> dict[str, Tensor]:
        """Mean ``loss`` for tokens ``x0 (N, D)`` with conditions ``z (N, C)``, and its noise-prediction part ``mse``
        (the whole loss with ``eps``; ``learned_sigma`` adds the VLB term), which compares across the two losses.
        ``per_token`` adds ``mse_per_token (N,)`` (detached, averaged over the ``batch_mul`` draws)."""
        n = x0.shape[0]
        if self.training:
            with torch.no_grad():
                self.x0_bound.copy_(torch.maximum(self.x0_bound, x0.detach().abs().amax(0)))
        x0 = x0.repeat(self.batch_mul, 1)  # (batch_mul N, D); z stays (N, C): embedded once per token
        t = torch.randint(0, self.timesteps, (x0.shape[0],), device=x0.device)
        terms = self.terms(x0, z, t, torch.randn_like(x0))
        out = {"loss": terms["loss"], "mse": terms["mse"].mean()}
        if per_token:
            out["mse_per_token"] = terms["mse"].detach().view(self.batch_mul, n).mean(0)
        return out

    def terms(self, x0: Tensor, z: Tensor, t: Tensor, eps: Tensor) -> dict[str, Tensor]:
        """Loss at given timesteps ``t (N,)`` and noise ``eps (N, D)``: ``loss`` (the mean), per token ``mse (N,)``
        and, with ``learned_sigma``, ``vb (N,)`` (in bits per dimension). ``z``: ``(N, C)``, or ``(N / k, C)`` for
        ``k`` draws per token stacked as ``x0.repeat(k, 1)`` (:meth:`DenoiserMLP.condition`)."""
        if not self.learn_sigma:
            abar = self.alphas_cumprod[t][:, None]
            x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
            err = (self.net(x_t, t, z) - eps).pow(2)  # (N, D)
            return {"loss": err.mean(), "mse": err.mean(1)}
        ch = self.chain(self.timesteps, x0.device)
        x_t = ch.sqrt_abar[t, None] * x0 + ch.sqrt_one_minus_abar[t, None] * eps
        eps_pred, v = self.net(x_t, t, z).chunk(2, dim=1)  # (N, D) each
        mse = (eps - eps_pred).pow(2).mean(1)
        mean = ch.posterior_mean(ch.predict_x0(x_t, eps_pred.detach(), t), x_t, t)
        logvar = ch.learned_logvar(v, t)
        kl = gaussian_kl(ch.posterior_mean(x0, x_t, t), ch.post_logvar[t, None], mean, logvar).mean(1)
        nll = discretized_gaussian_nll(x0, mean, 0.5 * logvar).mean(1)
        vb = torch.where(t == 0, nll, kl) / math.log(2.0)
        return {"loss": (mse + vb).mean(), "mse": mse, "vb": vb}

    # ------------------------------------------------------------------ sampling
    def clip_x0(self, x0: Tensor) -> Tensor:
        return torch.maximum(torch.minimum(x0, self.x0_bound), -self.x0_bound) if self.x0_bound.any() else x0

    def p_sample(self, x: Tensor, z: Tensor, *, steps: int, index: int, temperature: float, cfg: float | None,
                 noise: Tensor | None) -> Tensor:
        """One reverse step at position ``index`` of the ``steps``-step chain: ``x (N, D)`` -> ``(N, D)``.
        With ``cfg`` not None, ``z`` is ``[cond; uncond]`` ``(2N, C)``. ``noise (N, D)`` is unused at index 0."""
        xin = torch.cat([x, x]) if cfg is not None else x
        ch = self.chain(steps, x.device)
        if not self.learn_sigma:  # posterior variance, from the float32 abar of the kept timesteps
            abar = self.alphas_cumprod[ch.t]
            eps = self.net(xin, ch.t[index].expand(xin.shape[0]), z)
            if cfg is not None:
                eps_c, eps_u = eps.chunk(2)
                eps = eps_c + cfg * (eps_c - eps_u)
            a = abar[index]
            a_prev = abar[index - 1] if index > 0 else abar.new_ones(())
            beta = 1 - a / a_prev
            x0 = self.clip_x0((x - (1 - a).sqrt() * eps) / a.sqrt())
            mean = (a_prev.sqrt() * beta / (1 - a)) * x0 + ((1 - beta).sqrt() * (1 - a_prev) / (1 - a)) * x
            if index == 0:
                return mean
            return mean + temperature * (beta * (1 - a_prev) / (1 - a)).sqrt() * noise
        i = torch.full((x.shape[0],), index, dtype=torch.long, device=x.device)
        eps, v = self.net(xin, ch.t[index].expand(xin.shape[0]), z).chunk(2, dim=1)
        if cfg is not None:
            eps_c, eps_u = eps.chunk(2)
            eps, v = eps_c + cfg * (eps_c - eps_u), v[: x.shape[0]]  # the conditional variance
        mean = ch.posterior_mean(self.clip_x0(ch.predict_x0(x, eps, i)), x, i)
        if index == 0:
            return mean
        return mean + temperature * (0.5 * ch.learned_logvar(v, i)).exp() * noise

    @torch.no_grad()
    def sample(self, z: Tensor, *, steps: int, temperature: float, cfg: float | None, sampler: str = "ddpm",
               eta: float = 0.0, generator: torch.Generator | None = None,
               noise: Iterator[Tensor] | None = None) -> Tensor:
        """Draw tokens ``(N, D)`` for conditions ``z``. With ``cfg`` not None, ``z`` is ``[cond; uncond]``
        ``(2N, C)`` and ``eps = eps_c + cfg (eps_c - eps_u)``. ``noise`` replays recorded draws (the start, then
        one per step but the last) instead of drawing from ``generator`` (which draws them all at once).

        ``sampler``: ``ddpm`` (default, the paper's; each step is :meth:`p_sample`) or ``ddim`` (``x0`` and ``eps``
        carried to the previous kept timestep with noise ``eta * temperature * sigma``; ``eta = 1`` is DDPM with the
        posterior variance, ``eta = 0`` deterministic; a learned variance is not used). The loop runs on
        precomputed scalars: the condition embedding once, the timestep embeddings of the whole chain in one batch,
        each step's coefficients as numbers; the guided halves go through the denoiser as one batch."""
        guided = cfg is not None
        n, d = (z.shape[0] // 2 if guided else z.shape[0]), self.net.token_dim
        ch = self.chain(steps, z.device)
        key = (steps, str(z.device), sampler, eta)
        if key not in self._plans:
            self._plans[key] = ch.step_plan(sampler, eta)
        plan = self._plans[key]
        if noise is None:  # the start and every step's noise in one draw (deterministic DDIM: the start only)
            count = 1 if sampler == "ddim" and eta == 0 else steps
            noise = torch.randn((count, n, d), generator=generator, device=z.device).unbind(0)
        draws = iter(noise)
        cz = self.net.cond_embed(z)  # (N', W): fixed over the chain
        temb = self.net.time_cond(ch.t).unbind(0)  # S x (W,)
        bound = self.x0_bound if self.x0_bound.any() else None
        x = next(draws)
        for index in reversed(range(steps)):
            out = self.net.run(torch.cat([x, x]) if guided else x, cz + temb[index])  # (N', out_dim)
            eps, v = out.chunk(2, dim=1) if self.learn_sigma else (out, None)
            if guided:
                eps_c, eps_u = eps.chunk(2)
                eps = guide(eps_c, eps_u, cfg)
                v = None if v is None else v[:n]  # the conditional variance
            rx, rm, *coef = plan[index]
            x0 = torch.sub(x * rx, eps, alpha=rm)
            if bound is not None:
                x0 = torch.clamp(x0, -bound, bound)
            if sampler == "ddim":
                c_x0, c_eps, sigma = coef
                if bound is not None:  # the eps consistent with the clipped x0
                    eps = torch.sub(x * rx, x0).div_(rm)
                x = torch.add(x0.mul_(c_x0), eps, alpha=c_eps)
                if sigma > 0:  # (sigma is 0 at the last step, and everywhere with eta = 0)
                    x.add_(next(draws), alpha=temperature * sigma)
                continue
            c_x0, c_xt, std, log_beta, post_logvar = coef
            x = torch.add(x0.mul_(c_x0), x, alpha=c_xt)  # the posterior mean
            if index == 0:
                break
            if v is None:
                x.add_(next(draws), alpha=temperature * std)
            else:  # exp(0.5 ((1 + v)/2 log beta + (1 - v)/2 log beta~))
                half = 0.25 * (log_beta - post_logvar)
                std_v = torch.add(v * half, 0.25 * (log_beta + post_logvar)).exp_()
                x.addcmul_(std_v, next(draws), value=temperature)
        return x

    # ------------------------------------------------------------------ cost
    def train_flops_per_token(self) -> float:
        """Forward and backward of ``batch_mul`` draws on one condition embedding. The timestep embedding runs once
        per distinct timestep of a batch (at most ``T``: the table is shared by every token), so it is not counted."""
        return 3 * (self.batch_mul * self.net.run_flops() + self.net.cond_flops())

    def sample_flops_per_token(self, steps: int, guided: bool) -> float:
        # the sampler embeds the condition once per chain and the timesteps once per batch (negligible per token)
        return (2 if guided else 1) * (self.net.cond_flops() + steps * self.net.run_flops())
