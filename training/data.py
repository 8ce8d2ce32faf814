"""Data loading: manifest rows to batches, augmented in worker processes.

Each photo is read as serving reads it: decoded at a reduced scale, upright, cropped to its
bbox, shorter side resized (`training.decode_cache`, once per run when the cache is on). With
augmentation off (evaluation batches, or the `none` recipe) a sample is `to_model_input` of
that, the very function serving runs on every photo, to the pixel; augmentation stays near
the same centre crop (`training.augment`). A photo that cannot be decoded is skipped and
counted, never the end of a run.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from torch.utils.data import DataLoader, Dataset, DistributedSampler, WeightedRandomSampler

from touchstone.data.manifest import PhotoRecord
from touchstone.imaging import (
    DEFAULT_MAX_PIXELS,
    PhotoError,
    Preprocessing,
    decode_slots,
    normalize,
    to_model_input,
)
from training.augment import create_augmentation
from training.config import DataConfig
from training.decode_cache import CacheKey, DecodeCache, decode_for_training

AUTHENTIC = "authentic"


class Batch(NamedTuple):
    images: torch.Tensor
    labels: torch.Tensor  # 1.0 authentic, 0.0 counterfeit
    regions: torch.Tensor  # index into the model's region vocabulary
    weights: torch.Tensor
    indices: torch.Tensor  # row of the data set, to line predictions up with records
    skipped: int  # photos in this batch that could not be decoded


class RegionPhotos(Dataset):
    def __init__(
        self,
        records: Sequence[PhotoRecord],
        regions: tuple[str, ...],
        preprocessing: Preprocessing,
        augment: str | None = None,
        seed: int = 0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.records = list(records)
        self.region_index = {name: i for i, name in enumerate(regions)}
        self.preprocessing = preprocessing
        self.max_pixels = max_pixels
        # `none` is the serving transform itself, not a recipe that imitates it.
        self.transform = (
            create_augmentation(augment, preprocessing, seed)
            if augment and augment != "none"
            else None
        )
        self.cache: DecodeCache | None = None
        self.cache_keys: list[CacheKey | None] = []

    def use_cache(
        self,
        cache: DecodeCache,
        workers: int = 1,
        console: Console | None = None,
        show_progress: bool = True,
    ) -> None:
        """Decode every photo into `cache` now (those not there yet); samples then read it."""
        self.cache_keys = cache.add(
            self.records,
            self.preprocessing,
            workers=workers,
            max_pixels=self.max_pixels,
            console=console,
            show_progress=show_progress,
        )
        self.cache = cache

    def __len__(self) -> int:
        return len(self.records)

    def photo(self, index: int) -> np.ndarray | None:
        """The photo of row `index` as training keeps it (uint8 HxWx3, shorter side
        `shorter_side(prep)`), or None if it cannot be decoded."""
        if self.cache is not None:
            key = self.cache_keys[index]
            return None if key is None else self.cache.image(key)
        record = self.records[index]
        try:
            return decode_for_training(
                record.path, self.preprocessing, record.bbox, self.max_pixels
            )
        except PhotoError:
            return None

    def __getitem__(self, index: int) -> tuple | None:
        record = self.records[index]
        photo = self.photo(index)
        if photo is None:
            return None
        if self.transform is None:
            # Resizing to the size it already has is an exact copy: serving's pixels.
            pixels = to_model_input(Image.fromarray(photo), self.preprocessing)
        else:
            pixels = normalize(self.transform(image=photo)["image"], self.preprocessing)
        label = 1.0 if record.label == AUTHENTIC else 0.0
        return (
            torch.from_numpy(pixels),
            label,
            self.region_index[record.region],
            record.weight,
            index,
        )


def collate(samples: list[tuple | None]) -> Batch:
    good = [s for s in samples if s is not None]
    skipped = len(samples) - len(good)
    if not good:
        empty = torch.zeros(0)
        return Batch(torch.zeros(0, 3, 1, 1), empty, empty.long(), empty, empty.long(), skipped)
    images, labels, regions, weights, indices = zip(*good, strict=True)
    return Batch(
        torch.stack(images),
        torch.tensor(labels, dtype=torch.float32),
        torch.tensor(regions, dtype=torch.long),
        torch.tensor(weights, dtype=torch.float32),
        torch.tensor(indices, dtype=torch.long),
        skipped,
    )


def _seed_worker(worker_id: int) -> None:
    """Each worker draws its own augmentations, repeatably: its seed comes from the loader's
    seeded generator, which differs per worker and per epoch."""
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32
    random.seed(seed)
    np.random.seed(seed)
    dataset = info.dataset
    if isinstance(dataset, RegionPhotos) and dataset.transform is not None:
        dataset.transform.set_random_seed(seed)


def fill_decode_cache(
    datasets: Sequence[RegionPhotos],
    config: DataConfig,
    console: Console | None = None,
    show_progress: bool = True,
) -> DecodeCache:
    """One cache for the data sets, filled before the first epoch. Nothing else runs while it
    fills, so it decodes on every core it may (`decode_slots`), or on the loader's workers if
    more."""
    cache = DecodeCache()
    threads = max(1, config.workers, decode_slots())
    for dataset in datasets:
        dataset.use_cache(cache, threads, console, show_progress)
    return cache


def class_weights(records: Sequence[PhotoRecord]) -> dict[str, float]:
    """Inverse label frequency, scaled so the average photo weighs 1."""
    counts = Counter(r.label for r in records)
    total = sum(counts.values())
    return {label: total / (len(counts) * n) for label, n in counts.items()}


def train_loader(
    dataset: RegionPhotos,
    config: DataConfig,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> tuple[DataLoader, DistributedSampler | None]:
    # The sampler's seed is shared so that ranks split one permutation; each rank's own
    # generator seeds its workers' augmentations differently.
    generator = torch.Generator().manual_seed(seed + 1000 * rank)
    sampler = None
    distributed = None
    if world_size > 1:
        distributed = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        sampler = distributed
    elif config.balance == "sampler":
        weights = class_weights(dataset.records)
        per_photo = torch.tensor([weights[r.label] for r in dataset.records])
        sampler = WeightedRandomSampler(
            per_photo, len(dataset), replacement=True, generator=generator
        )
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=config.workers,
        collate_fn=collate,
        worker_init_fn=_seed_worker if config.workers > 0 else None,
        generator=generator,
        drop_last=len(dataset) > config.batch_size * world_size,
        pin_memory=pin_memory,
        persistent_workers=False,
    )
    return loader, distributed


def eval_loader(
    dataset: RegionPhotos, config: DataConfig, rank: int = 0, world_size: int = 1
) -> DataLoader:
    sampler = (
        DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
        if world_size > 1
        else None
    )
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        collate_fn=collate,
        shuffle=False,
    )
