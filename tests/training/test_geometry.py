"""One geometry from training to serving: the training sample without augmentation is serving's
model input to the pixel; augmentation stays near serving's crop; photos are decoded once."""

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
from PIL import Image

from touchstone.bbox import BBox
from touchstone.data.manifest import PhotoRecord
from touchstone.imaging import Preprocessing, decode_reduced, to_model_input
from touchstone.preprocessing import shorter_side
from training.config import DataConfig
from training.data import RegionPhotos, collate, fill_decode_cache, train_loader
from training.decode_cache import DecodeCache

REGIONS = ("hardware", "stitching", "logo")
PREP = Preprocessing(96, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic", crop_pct=0.875)
# Upright, the photo is 1600x1200 (4:3); the bands left and right of its centre square are red.
WIDTH, HEIGHT, BAND = 1600, 1200, 200


def _upright_scene() -> np.ndarray:
    """Smooth ramps in the centre square (small shifts keep them alike), red bands outside."""
    x = np.linspace(40, 215, WIDTH)[None, :].repeat(HEIGHT, 0)
    y = np.linspace(40, 215, HEIGHT)[:, None].repeat(WIDTH, 1)
    scene = np.stack([np.full_like(x, 128), x, y], axis=-1).astype(np.uint8)
    scene[:, :BAND] = scene[:, WIDTH - BAND :] = (255, 0, 0)
    return scene


def _phone_photo(path: Path, upright: np.ndarray) -> Path:
    """Stored turned a quarter, with EXIF orientation 6 saying how to turn it upright, as
    phones write them."""
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, "JPEG", quality=92, exif=exif)
    return path


def _record(path: Path, bbox: BBox | None = None, line: int = 2) -> PhotoRecord:
    return PhotoRecord(
        line=line, image=path.name, path=path, item_id=f"item{line}", region="logo",
        label="authentic", bbox=bbox,
    )  # fmt: skip


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _phone_photo(tmp_path_factory.mktemp("geometry") / "phone.jpg", _upright_scene())


def _serving_input(path: Path, prep: Preprocessing, bbox: BBox | None) -> np.ndarray:
    return to_model_input(decode_reduced(path, shorter_side(prep), bbox=bbox).image, prep)


def _red_share(sample: np.ndarray) -> float:
    pixels = (sample.transpose(1, 2, 0) * 0.5 + 0.5) * 255  # undo mean and std 0.5
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
    return float(red.mean())


def test_the_photo_is_upright_and_four_by_three(photo: Path) -> None:
    reduced = decode_reduced(photo, 100)
    assert (reduced.width, reduced.height) == (WIDTH, HEIGHT)
    assert reduced.image.getpixel((2, reduced.image.height // 2))[0] > 200  # red band on the left


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("augment", [None, "none"])
@pytest.mark.parametrize("bbox", [BBox(100, 50, 1500, 1150), BBox(300, 0, 900, 1200), None])
def test_without_augmentation_a_sample_is_servings_input_to_the_pixel(
    photo: Path, cached: bool, augment: str | None, bbox: BBox | None
) -> None:
    dataset = RegionPhotos([_record(photo, bbox)], REGIONS, PREP, augment)
    if cached:
        dataset.use_cache(DecodeCache(), show_progress=False)
    sample = dataset[0][0].numpy()
    assert sample.shape == (3, 96, 96)
    assert np.array_equal(sample, _serving_input(photo, PREP, bbox))


def test_the_none_recipe_is_servings_crop(photo: Path) -> None:
    from training.augment import create_augmentation

    dataset = RegionPhotos([_record(photo)], REGIONS, PREP)
    crop = create_augmentation("none", PREP, seed=0)(image=dataset.photo(0))["image"]
    served = _serving_input(photo, PREP, None)
    assert np.array_equal((crop.astype(np.float32) / 255 - 0.5) / 0.5, served.transpose(1, 2, 0))


def _old_squash(image: np.ndarray) -> np.ndarray:
    """What training did before: the whole frame resized to a square."""
    return A.Resize(96, 96, interpolation=cv2.INTER_AREA)(image=image)["image"]


def test_augmentation_stays_near_servings_crop(photo: Path) -> None:
    dataset = RegionPhotos([_record(photo)], REGIONS, PREP, "phone", seed=3)
    dataset.use_cache(DecodeCache(), show_progress=False)
    served = _serving_input(photo, PREP, None)
    assert _red_share(served) == 0.0
    samples = [dataset[0][0].numpy() for _ in range(60)]
    assert all(s.shape == (3, 96, 96) for s in samples)
    assert len({s.tobytes() for s in samples}) > 50  # it does augment
    red = [_red_share(s) for s in samples]
    # The red bands lie outside serving's crop: at most a sliver at an edge, never a band.
    assert max(red) < 0.05 and np.mean(red) < 0.01
    correlation = [np.corrcoef(s.ravel(), served.ravel())[0, 1] for s in samples]
    assert np.median(correlation) > 0.9 and min(correlation) > 0.7
    # The old squash shows the bands: a quarter of its frame is red.
    squashed = _old_squash(dataset.photo(0)).astype(np.float32) / 255
    assert _red_share(((squashed - 0.5) / 0.5).transpose(2, 0, 1)) > 0.2


def test_epochs_read_the_cache_and_a_new_preprocessing_adds_entries(
    photo: Path, tmp_path: Path
) -> None:
    scene = _upright_scene()
    paths = []
    for i in range(4):
        scene[600:700, 700 + 40 * i : 760 + 40 * i] = (0, 0, 255)  # four different photos
        paths.append(_phone_photo(tmp_path / f"photo{i}.jpg", scene))
    records = [_record(p, BBox(100, 50, 1500, 1150), line=i + 2) for i, p in enumerate(paths)]
    records.append(_record(paths[0], BBox(100, 50, 1500, 1150), line=9))  # listed twice
    expected = [_serving_input(r.path, PREP, r.bbox) for r in records]
    train_set = RegionPhotos(records, REGIONS, PREP)
    config = DataConfig(batch_size=5, workers=0, balance="none", augment="none")
    cache = fill_decode_cache([train_set], config, show_progress=False)
    assert cache.decodes == 4 and len(cache) == 4
    for path in paths:
        path.unlink()  # from here on, only the cache can give the samples
    loader, _ = train_loader(train_set, config, seed=0)
    for _epoch in range(2):
        batches = list(loader)
        assert sum(b.skipped for b in batches) == 0
        seen = {
            int(i): image for b in batches for i, image in zip(b.indices, b.images, strict=True)
        }
        assert sorted(seen) == list(range(5))
        assert all(np.array_equal(seen[i].numpy(), expected[i]) for i in seen)
    assert cache.decodes == 4

    # The same photos, now gone: a new preprocessing cannot be served from the old entries.
    bigger = Preprocessing(128, PREP.mean, PREP.std, PREP.interpolation, PREP.crop_pct)
    RegionPhotos(records, REGIONS, bigger).use_cache(cache, show_progress=False)
    assert cache.decodes == 4 and len(cache) == 4  # nothing to read, nothing added

    again = [_phone_photo(tmp_path / f"again{i}.jpg", _upright_scene()) for i in range(2)]
    for prep, bbox, new in [(PREP, None, 1), (bigger, None, 1), (PREP, BBox(0, 0, 800, 600), 1)]:
        before = len(cache)
        dataset = RegionPhotos([_record(p, bbox) for p in again], REGIONS, prep)
        dataset.use_cache(cache, show_progress=False)
        assert len(cache) == before + new  # the two photos are the same bytes: one entry
        assert np.array_equal(dataset[1][0].numpy(), _serving_input(again[1], prep, bbox))


def test_a_photo_that_cannot_be_decoded_is_skipped_and_counted(photo: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photo.read_bytes()[:300])
    records = [_record(photo), _record(broken, line=3), _record(tmp_path / "gone.jpg", line=4)]
    for cached in (False, True):
        dataset = RegionPhotos(records, REGIONS, PREP, "phone")
        if cached:
            dataset.use_cache(DecodeCache(), show_progress=False)
        batch = collate([dataset[i] for i in range(3)])
        assert batch.skipped == 2 and batch.indices.tolist() == [0]
