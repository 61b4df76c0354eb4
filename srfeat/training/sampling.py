"""The training data of a run: seeded items, a resumable sampler, the DataLoader.

Exact resumption: every training item is drawn with its own seed (from the run's seed, the
epoch and the item's index), the data order of an epoch comes from (seed, epoch) (from the seed
alone with `data.shuffle: once`), and the run's state records how many batches of the current
epoch are done; so a resumed run sees the same batches as an uninterrupted one, whatever the
number of DataLoader workers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from srfeat.errors import ConfigError
from srfeat.locks import close_inherited_locks
from srfeat.training.config import TrainingConfig
from srfeat.training.distributed import DistributedContext
from srfeat.training.interrupt import quiet_worker

__all__ = [
    "Repeated",
    "ResumableSampler",
    "SeededItems",
    "build_loader",
    "build_train_dataset",
    "check_data",
    "steps_per_epoch",
]


class SeededItems(Dataset):
    """Makes every item's randomness (crop, flip, rotation) a function of its own seed.

    The sampler hands out (index, seed) keys; the global random generators are seeded from
    the key before the wrapped dataset draws, so an item is the same in any worker, on any
    rank and after a resume.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        # torch's Dataset stubs leave __len__ out (not every dataset has one); the map-style ones here do.
        return len(self.dataset)  # pyright: ignore[reportArgumentType]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        return self.dataset[index]


class ResumableSampler(DistributedSampler):
    """DistributedSampler that yields (index, item seed) and can start mid-epoch.

    This rank's share of global batch b is the b-th run of `batch_size` indices of its
    strided share of the epoch's permutation, so W ranks with batch B see exactly the
    samples that one process with batch W*B sees, batch by batch.
    """

    def __init__(
        self, dataset: Dataset, context: DistributedContext, seed: int, reshuffle_every_epoch: bool = True
    ) -> None:
        super().__init__(
            dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed, drop_last=True
        )
        self.reshuffle_every_epoch = reshuffle_every_epoch
        self.start = 0  # position in this rank's share at which the next epoch begins

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + (self.epoch if self.reshuffle_every_epoch else 0))
        # Dataset's stubs leave __len__ out; DistributedSampler itself calls len() on it.
        dataset_size = len(self.dataset)  # pyright: ignore[reportArgumentType]
        order = torch.randperm(dataset_size, generator=generator).tolist()[: self.total_size]
        share = order[self.rank : self.total_size : self.num_replicas]
        for position in range(self.start, len(share)):
            index = share[position]
            yield index, (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index


class Repeated(Dataset):
    """`dataset` visited `times` times per epoch (data.repeat for the kinds whose items are fixed:
    a centre crop, a prepared patch); item i is item i % len(dataset)."""

    def __init__(self, dataset: Dataset, times: int) -> None:
        self.dataset = dataset
        self.times = times

    def __len__(self) -> int:
        # Dataset's stubs leave __len__ out; the datasets repeated here are map-style ones that have it.
        return len(self.dataset) * self.times  # pyright: ignore[reportArgumentType]

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index % len(self.dataset)]  # pyright: ignore[reportArgumentType]  # as in __len__


# Items in one epoch (images x data.repeat): COCO is 118,287, the authors' DIV2K patches 136,000.
MAX_EPOCH_ITEMS = 10_000_000


def build_train_dataset(config: TrainingConfig) -> Dataset:
    from srfeat.data.datasets import CenterCropDataset, PairedPatchDataset, RandomCropDataset, distinct_folders

    # data.repeat is how to see images more often; a folder listed twice is more likely a slip
    folders = distinct_folders([config.resolve_path(d) for d in config.data.train_dirs], "data.train_dirs", "used once")
    data, scale = config.data, config.model.scale
    if data.kind == "random_crop":  # a new crop at each visit
        return RandomCropDataset(
            folders,
            hr_patch_size=data.hr_patch_size,
            scale=scale,
            repeats=data.repeat,
            image_scales=data.image_scales,
            lr_from=data.lr_from,
            image_aspects=data.image_aspects,
            permute_channels=data.permute_channels,
        )
    if data.kind == "center_crop":
        dataset: Dataset = CenterCropDataset(folders, hr_patch_size=data.hr_patch_size, scale=scale)
    else:
        dataset = PairedPatchDataset(folders, scale=scale, hr_patch_size=data.hr_patch_size)
    # these kinds took data.repeat and ignored it: epochs of one visit, epoch milestones reached early
    return Repeated(dataset, data.repeat) if data.repeat > 1 else dataset


def _init_worker(worker_id: int) -> None:
    quiet_worker(worker_id)  # a stop signal to the whole job must not kill the workers
    close_inherited_locks()  # nor may a worker outliving its run keep the run folder locked


def build_loader(
    config: TrainingConfig, context: DistributedContext, device: torch.device
) -> tuple[SeededItems, ResumableSampler, DataLoader]:
    """The run's dataset, its sampler (which the loop positions at each epoch) and the loader."""
    dataset = SeededItems(build_train_dataset(config))
    if len(dataset) > MAX_EPOCH_ITEMS:
        # the sampler draws one permutation of the epoch's items: this many would not fit in memory
        raise ConfigError(
            f"an epoch of {len(dataset):,} training items is more than {MAX_EPOCH_ITEMS:,}: lower data.repeat "
            "(train.epochs and train.max_steps set the run's length)"
        )
    sampler = ResumableSampler(dataset, context, config.train.seed, config.data.shuffle == "every_epoch")
    data = config.data
    use_pinned = data.pin_memory and device.type == "cuda"
    loader = DataLoader(
        dataset,
        batch_size=config.train.batch_size,
        sampler=sampler,
        num_workers=data.num_workers,
        pin_memory=use_pinned,
        drop_last=True,
        worker_init_fn=_init_worker,
        persistent_workers=data.num_workers > 0,
        prefetch_factor=data.prefetch_factor if data.num_workers > 0 else None,
    )
    if len(loader) == 0:
        steps_per_epoch(len(dataset), config, context.world_size)  # says why
    return dataset, sampler, loader


def steps_per_epoch(items: int, config: TrainingConfig, world_size: int) -> int:
    """The steps of an epoch of `items` (each rank's share, in whole batches); none is an error."""
    steps = items // world_size // config.train.batch_size
    if steps == 0:
        raise ConfigError(
            f"the training set has {items} items, fewer than one global batch "
            f"({config.train.batch_size} x {world_size}): lower train.batch_size or add images"
        )
    return steps


def check_data(config: TrainingConfig) -> int:
    """What `srfeat train --dry-run` checks of the data, from file headers and names, as the run
    will find it: the training folders hold usable images (patch pairs) for at least one batch, the
    validation folder holds images. Returns the steps of an epoch of one process."""
    from srfeat.data.datasets import PairedPatchDataset, distinct_folders, scan_images

    data, scale = config.data, config.model.scale
    folders = distinct_folders([config.resolve_path(d) for d in data.train_dirs], "data.train_dirs", "used once")
    if data.kind == "patches":  # names only, and one pair read
        items = len(PairedPatchDataset(folders, scale=scale, hr_patch_size=data.hr_patch_size))
    else:
        items = len(scan_images(folders, data.hr_patch_size, "training data")[0])
    if config.validation.dir is not None:  # the run's Validator skips images smaller than the scale
        scan_images([config.resolve_path(config.validation.dir)], scale, "validation.dir")
    return steps_per_epoch(items * data.repeat, config, 1)
