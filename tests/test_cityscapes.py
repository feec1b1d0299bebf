"""Cityscapes loader on tiny generated folders: targets, labelIds conversion, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mask2anomaly.data.cityscapes import CityscapesSemantic
from mask2anomaly.data.labels import LABEL_ID_TO_TRAIN_ID
from mask2anomaly.data.transforms import TrainTransform
from mask2anomaly.errors import UserError

HEIGHT, WIDTH = 24, 40


def write_pair(
    root: Path,
    split: str,
    city: str,
    name: str,
    label: np.ndarray,
    kind: str = "labelTrainIds",
    image: np.ndarray | None = None,
) -> tuple[Path, Path]:
    """Write an image (random unless given) and its label PNG in the Cityscapes layout."""
    image_dir = root / "leftImg8bit" / split / city
    label_dir = root / "gtFine" / split / city
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    if image is None:
        image = np.random.default_rng(0).integers(0, 256, (*label.shape, 3), dtype=np.uint8)
    image_path = image_dir / f"{city}_{name}_leftImg8bit.png"
    label_path = label_dir / f"{city}_{name}_gtFine_{kind}.png"
    Image.fromarray(image).save(image_path)
    Image.fromarray(label.astype(np.uint8)).save(label_path)
    return image_path, label_path


def stripes(values: list[int]) -> np.ndarray:
    """HEIGHT x WIDTH label with vertical stripes of the given values."""
    columns = np.array_split(np.arange(WIDTH), len(values))
    label = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    for value, cols in zip(values, columns):
        label[:, cols] = value
    return label


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    write_pair(tmp_path, "train", "aachen", "000000_000019", stripes([0, 13, 255, 5]))
    write_pair(tmp_path, "train", "bremen", "000001_000002", stripes([10, 10, 18]))
    return tmp_path


def test_items_have_one_mask_per_class_present(root: Path) -> None:
    dataset = CityscapesSemantic(root, "train")
    assert len(dataset) == 2
    assert [p.parent.name for p in dataset.image_paths] == ["aachen", "bremen"]
    image, target = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (3, HEIGHT, WIDTH)
    assert image.min() >= 0 and image.max() <= 255 and image.max() > 1
    label = stripes([0, 13, 255, 5])
    assert target.labels.tolist() == [0, 5, 13]
    assert target.masks.dtype == torch.bool and target.masks.shape == (3, HEIGHT, WIDTH)
    for cls, mask in zip(target.labels.tolist(), target.masks):
        assert np.array_equal(mask.numpy(), label == cls)
    assert np.array_equal(target.void_mask.numpy(), label == 255)
    assert target.outlier_mask is None
    _, target = dataset[1]
    assert target.labels.tolist() == [10, 18]


def test_image_is_rgb_in_file_order(tmp_path: Path) -> None:
    image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[..., 0] = 200  # red
    write_pair(tmp_path, "val", "lindau", "000000_000019", stripes([1]), image=image)
    loaded, _ = CityscapesSemantic(tmp_path, "val")[0]
    assert loaded[0].eq(200).all() and loaded[1:].eq(0).all()


def test_label_ids_are_converted_when_train_ids_are_absent(tmp_path: Path) -> None:
    label_ids = np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH) % (33 + 1)
    write_pair(tmp_path, "val", "lindau", "000000_000019", label_ids, kind="labelIds")
    dataset = CityscapesSemantic(tmp_path, "val")
    assert dataset.label_paths[0].name.endswith("_gtFine_labelIds.png")
    train_ids = dataset.read_label(0)
    for label_id in range(34):
        expected = LABEL_ID_TO_TRAIN_ID.get(label_id, 255)
        assert (train_ids[label_ids == label_id] == expected).all()
    # spot checks from the table: road 7 -> 0, sky 23 -> 10, bicycle 33 -> 18, parking 9 -> void
    assert LABEL_ID_TO_TRAIN_ID[7] == 0 and LABEL_ID_TO_TRAIN_ID[23] == 10
    assert LABEL_ID_TO_TRAIN_ID[33] == 18 and 9 not in LABEL_ID_TO_TRAIN_ID
    _, target = dataset[0]
    assert target.labels.tolist() == list(range(19))


def test_train_ids_are_preferred_over_label_ids(root: Path) -> None:
    write_pair(root, "train", "aachen", "000000_000019", stripes([7]), kind="labelIds")
    dataset = CityscapesSemantic(root, "train")
    assert dataset.label_paths[0].name.endswith("_gtFine_labelTrainIds.png")


def test_outlier_label_becomes_outlier_mask(tmp_path: Path) -> None:
    label = stripes([0, 254, 2])
    write_pair(tmp_path, "train", "ulm", "000000_000019", label)
    _, target = CityscapesSemantic(tmp_path, "train", outliers=True)[0]
    assert target.labels.tolist() == [0, 2]
    assert np.array_equal(target.outlier_mask.numpy(), label == 254)
    assert not target.void_mask.any()
    with pytest.raises(UserError, match=r"\[254\] outside 0\.\.18 and 255"):
        CityscapesSemantic(tmp_path, "train")[0]


def test_transforms_are_reproducible_from_the_seed(root: Path) -> None:
    transform = TrainTransform(min_sizes=(16, 24, 32), max_size=100, crop_size=(12, 20))
    dataset = CityscapesSemantic(root, "train", transform)
    image_a, target_a = dataset[(0, 123)]
    image_b, target_b = dataset[(0, 123)]
    assert torch.equal(image_a, image_b) and torch.equal(target_a.masks, target_b.masks)
    assert image_a.shape[1:] == target_a.masks.shape[1:] and image_a.shape[1] <= 12
    assert image_a.shape[2] <= 20


def test_cached_items_equal_fresh_reads_and_survive_in_place_edits(root: Path) -> None:
    transform = TrainTransform(min_sizes=(16, 24, 32), max_size=100, crop_size=(12, 20))
    plain = CityscapesSemantic(root, "train", transform)
    cached = CityscapesSemantic(root, "train", transform, cache=True)
    cached.read(1)  # fills the cache
    first = cached.read(1)
    first.image[:] = 0  # a transform writing into what it got must not reach the cache
    first.label[:] = 7
    (root / "leftImg8bit").rename(root / "moved")  # later reads must come from memory
    again = cached.read(1)
    assert again.image.any() and (again.label != 7).any()
    (root / "moved").rename(root / "leftImg8bit")
    assert np.array_equal(again.image, plain.read(1).image)
    assert np.array_equal(again.label, plain.read(1).label)
    for key in ((0, 5), (1, 9)):
        image_a, target_a = plain[key]
        image_b, target_b = cached[key]
        assert torch.equal(image_a, image_b) and torch.equal(target_a.masks, target_b.masks)


def one_line_error(callable_, match: str) -> str:
    with pytest.raises(UserError) as info:
        callable_()
    message = str(info.value)
    assert "\n" not in message
    assert match in message, message
    return message


def test_wrong_data_root(tmp_path: Path) -> None:
    one_line_error(lambda: CityscapesSemantic(tmp_path / "nope", "train"), "does not exist")
    message = one_line_error(lambda: CityscapesSemantic(tmp_path, "train"), "not a Cityscapes")
    assert str(tmp_path) in message
    (tmp_path / "leftImg8bit" / "train" / "aachen").mkdir(parents=True)
    one_line_error(lambda: CityscapesSemantic(tmp_path, "train"), "no <city>/*_leftImg8bit.png")


def test_missing_label_file(root: Path) -> None:
    _, label_path = write_pair(root, "train", "bremen", "000009_000009", stripes([1]))
    label_path.unlink()
    message = one_line_error(lambda: CityscapesSemantic(root, "train"), "missing label file")
    assert "bremen_000009_000009_gtFine_labelTrainIds.png" in message


def test_size_mismatch(root: Path) -> None:
    image_path, _ = write_pair(root, "train", "bremen", "000009_000009", stripes([1]))
    Image.fromarray(np.zeros((HEIGHT + 2, WIDTH, 3), dtype=np.uint8)).save(image_path)
    dataset = CityscapesSemantic(root, "train")
    message = one_line_error(lambda: dataset[2], "does not match image size 40x26")
    assert "bremen_000009_000009_gtFine_labelTrainIds.png" in message


def test_label_value_out_of_range(root: Path) -> None:
    write_pair(root, "train", "bremen", "000009_000009", stripes([3, 19, 200]))
    message = one_line_error(lambda: CityscapesSemantic(root, "train")[2], "[19, 200] outside")
    assert "bremen_000009_000009_gtFine_labelTrainIds.png" in message


def test_label_id_out_of_range(tmp_path: Path) -> None:
    write_pair(tmp_path, "val", "lindau", "000000_000019", stripes([7, 34]), kind="labelIds")
    one_line_error(lambda: CityscapesSemantic(tmp_path, "val")[0], "[34] outside 0..33")


def test_corrupt_image(root: Path) -> None:
    image_path, _ = write_pair(root, "train", "bremen", "000009_000009", stripes([1]))
    image_path.write_bytes(image_path.read_bytes()[:60])  # truncated PNG
    dataset = CityscapesSemantic(root, "train")
    message = one_line_error(lambda: dataset[2], "cannot read image")
    assert str(image_path) in message
    image_path.write_bytes(b"not a png at all")
    one_line_error(lambda: dataset[2], "cannot read image")


def test_multichannel_label(root: Path) -> None:
    _, label_path = write_pair(root, "train", "bremen", "000009_000009", stripes([1]))
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)).save(label_path)
    one_line_error(lambda: CityscapesSemantic(root, "train")[2], "single-channel")
