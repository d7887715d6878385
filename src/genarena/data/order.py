"""The order in which a run sees its data: seeded per epoch, split over ranks, resumable mid-epoch.

Epoch ``e`` of a run with seed ``s`` visits the training set in one permutation drawn from a generator seeded
with ``(s, e)`` alone (never the global RNG), and gives every position of that permutation its own seed for
the sample's random augmentation (flips, posterior noise). Rank ``r`` of ``w`` takes positions ``r, r + w, ...``
of the permutation, so ``w`` processes with per-rank batch ``B / w`` see, step by step, the same global
batches as one process with batch ``B``. The datamodule records how far the epoch got in every checkpoint
(``state_dict``), and a resumed run continues the same permutation at the next batch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

log = logging.getLogger(__name__)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator seeded by ``(seed, epoch)`` through a hash, so seed 1 / epoch 0 never repeats seed 0 / epoch 1."""
    digest = hashlib.sha1(f"genarena-order:{seed}:{epoch}".encode()).hexdigest()
    return torch.Generator().manual_seed(int(digest[:15], 16))


def sample_generator(key: Any) -> tuple[int, torch.Generator | None]:
    """A dataset key as ``(index, generator)``: a :class:`ResumableSampler` yields ``(index, sample seed)`` and the
    sample's randomness comes from that seed; a plain index (evaluation, grids) gives ``None`` (the global RNG)."""
    if isinstance(key, tuple):
        index, seed = key
        return int(index), torch.Generator().manual_seed(int(seed))
    return int(key), None


def rand(generator: torch.Generator | None) -> float:
    """One uniform number in [0, 1) from ``generator`` (the global RNG when None)."""
    return float(torch.rand((), generator=generator))


class ResumableSampler(DistributedSampler):
    """This rank's share of a seeded per-epoch order, optionally with a seed per sample, restartable mid-epoch.

    A ``DistributedSampler`` (so Lightning does not wrap it) with genarena's order: ``equal_shares`` (training)
    drops the tail of the permutation so every rank gets as many samples (DDP needs equal batch counts);
    otherwise (validation) the shares differ by at most one sample and nothing is repeated, so validation
    means over ranks equal one process's. ``position`` is how many samples of the current epoch this rank has
    consumed; :meth:`load_state_dict` sets it and the next iteration starts there.
    """

    def __init__(self, dataset: Dataset, seed: int, shuffle: bool, num_replicas: int = 1, rank: int = 0,
                 equal_shares: bool = True, sample_seeds: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=equal_shares)
        self.equal_shares, self.sample_seeds = equal_shares, sample_seeds
        n = len(dataset)  # type: ignore[arg-type]
        self.total = n - n % num_replicas if equal_shares else n
        self.num_samples = len(range(rank, self.total, num_replicas))
        self._skip, self._skip_epoch = 0, None

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at every epoch start; a restored position applies to its own epoch only."""
        self.epoch = epoch

    def order(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's indices and sample seeds of the current epoch: ``(num_samples,)`` each."""
        g = epoch_generator(self.seed, self.epoch)
        n = len(self.dataset)  # type: ignore[arg-type]
        perm = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        seeds = torch.randint(0, 2**62, (n,), generator=g)
        share = slice(self.rank, self.total, self.num_replicas)
        return perm[share], seeds[share]

    def __iter__(self) -> Iterator[Any]:
        indices, seeds = self.order()
        start = self._skip if self._skip_epoch == self.epoch else 0
        self._skip, self._skip_epoch = 0, None
        if self.sample_seeds:
            return iter(list(zip(indices[start:].tolist(), seeds[start:].tolist())))
        return iter(indices[start:].tolist())

    def state_at(self, consumed: int) -> dict[str, int]:
        """The state after this rank consumed ``consumed`` samples of the current epoch (plain ints)."""
        return {"epoch": int(self.epoch), "consumed_global": int(consumed) * self.num_replicas, "seed": int(self.seed)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue epoch ``state['epoch']`` after the samples every rank had consumed (a different number of ranks
        continues after the same global position)."""
        if int(state.get("seed", self.seed)) != self.seed:
            log.warning("the checkpoint's data order was seeded with %s, this run with %s: the order restarts",
                        state.get("seed"), self.seed)
            return
        self.epoch = int(state["epoch"])
        self._skip, self._skip_epoch = int(state["consumed_global"]) // self.num_replicas, self.epoch


class OrderedDataModule(L.LightningDataModule):
    """A datamodule whose training loader follows :class:`ResumableSampler` and whose checkpoint state is the
    position in the current epoch (batches the fit loop processed, times the batch size)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed
        self._train_sampler: ResumableSampler | None = None
        self._order_state: dict[str, int] | None = None
        self._train_batch_size = 0

    def _ranks(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def ordered_loader(self, dataset: Dataset, batch_size: int, train: bool, num_workers: int = 0,
                       sample_seeds: bool = True) -> DataLoader:
        """The training loader (seeded shuffle, equal shares, full batches, restored position) or a validation
        loader (fixed order, every sample once over all ranks)."""
        world, rank = self._ranks()
        sampler = ResumableSampler(dataset, self.seed, shuffle=train, num_replicas=world, rank=rank,
                                   equal_shares=train, sample_seeds=sample_seeds and train)
        if train:
            if self._order_state is not None:
                sampler.load_state_dict(self._order_state)
                self._order_state = None
            self._train_sampler, self._train_batch_size = sampler, batch_size
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=train, num_workers=num_workers,
                          persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available(),
                          generator=torch.Generator().manual_seed(self.seed))  # worker seeds: not the global RNG

    def state_dict(self) -> dict[str, Any]:
        sampler, trainer = self._train_sampler, getattr(self, "trainer", None)
        if sampler is None or trainer is None:
            return {}
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed  # this epoch's trained batches
        return {"train_order": sampler.state_at(batches * self._train_batch_size)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._order_state = state_dict.get("train_order")
