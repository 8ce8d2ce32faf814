"""Data loading: manifest rows to batches, decoded and augmented in worker processes.

A photo that cannot be decoded is skipped and counted, never the end of a run. Evaluation
batches go through `to_model_input`, the very function serving runs on every photo.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, WeightedRandomSampler

from touchstone.data.manifest import PhotoRecord
from touchstone.imaging import (
    DEFAULT_MAX_PIXELS,
    PhotoError,
    Preprocessing,
    crop_to_bbox,
    decode_photo,
    normalize,
    to_model_input,
)
from training.augment import create_augmentation
from training.config import DataConfig

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
        self.transform = (
            create_augmentation(augment, preprocessing.input_size, seed) if augment else None
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple | None:
        record = self.records[index]
        try:
            image = crop_to_bbox(decode_photo(record.path, max_pixels=self.max_pixels), record.bbox)
        except PhotoError:
            return None
        if self.transform is None:
            pixels = to_model_input(image, self.preprocessing)
        else:
            pixels = normalize(self.transform(image=np.asarray(image))["image"], self.preprocessing)
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
