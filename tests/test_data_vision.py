"""sncn.data.vision and sncn.data.download: every loader on a tiny fixture in each on-disk layout,
the cache, checksums and partial downloads, bad input, and the batch augmentation."""

from __future__ import annotations

import csv
import hashlib
import io
import pickle
import re
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import datasets as tv_datasets

import sncn.data as data_package
from sncn.corruptions import CORRUPTIONS
from sncn.data import cache_root, data_root
from sncn.data import download as dl
from sncn.data import vision as V
from sncn.utils import device_generator

RNG = np.random.default_rng(0)


def _images(n: int, size: int = 32) -> np.ndarray:
    return RNG.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    """Temporary or partial files anywhere under folder."""
    return [
        str(p)
        for p in folder.rglob("*")
        if p.name.endswith((".part", ".tmp")) or ".extracting-" in p.name
    ]


# ----------------------------------------------------------------------------------------------
# Fixtures in the real layouts


def _write_pickles(folder: Path, name: str, per_file: int = 3) -> dict[str, np.ndarray]:
    """torchvision's pickle layout; returns the expected arrays per split."""
    cls, key = V._PICKLES[name]
    folder.mkdir(parents=True)
    expected = {}
    for split, files in (("train", cls.train_list), ("test", cls.test_list)):
        xs, ys = [], []
        for file, _ in files:
            x = _images(per_file)
            y = RNG.integers(0, V.NUM_CLASSES[name], per_file)
            data = x.transpose(0, 3, 1, 2).reshape(per_file, -1)  # (N, 3072), channel-major
            with open(folder / file, "wb") as f:
                pickle.dump({b"data": data, key: y.tolist(), b"filenames": []}, f)
            xs.append(x)
            ys.append(y)
        expected[split] = (np.concatenate(xs), np.concatenate(ys))
    return expected


@pytest.fixture
def cifar10_pickles(tmp_path):
    expected = _write_pickles(tmp_path / "cifar10" / "cifar-10-batches-py", "cifar10")
    return tmp_path, expected


def _write_image_folders(split_dir: Path, suffixes=(".png",), names=("2", "10")) -> tuple:
    """<split>/<class>/<name><suffix> for the 10 CIFAR-10 classes; png is lossless."""
    images, labels = [], []
    for index, cls in enumerate(V.CIFAR10_CLASSES):
        (split_dir / cls).mkdir(parents=True)
        for j, stem in enumerate(names):
            image = _images(1)[0]
            suffix = suffixes[(index + j) % len(suffixes)]
            path = split_dir / cls / f"{stem}{suffix}"
            Image.fromarray(image).save(path)
            if suffix != ".png":  # lossy: expect what PIL decodes
                image = np.asarray(Image.open(path).convert("RGB"))
            images.append(image)
            labels.append(index)
    return np.stack(images), np.asarray(labels)


# ----------------------------------------------------------------------------------------------
# CIFAR


def test_load_cifar10_pickles(cifar10_pickles):
    root, expected = cifar10_pickles
    for split in ("train", "test"):
        images, labels = V.load_cifar("cifar10", split, root, progress=False)
        assert images.dtype == np.uint8 and images.shape == (len(labels), 32, 32, 3)
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(images, expected[split][0])
        np.testing.assert_array_equal(labels, expected[split][1])
    assert len(V.load_cifar("cifar10", "train", root)[0]) == 5 * 3


def test_load_cifar100_pickles_directly_under_root(tmp_path):
    expected = _write_pickles(tmp_path / "cifar-100-python", "cifar100", per_file=4)
    images, labels = V.load_cifar("CIFAR-100", "test", tmp_path, progress=False)
    np.testing.assert_array_equal(images, expected["test"][0])
    np.testing.assert_array_equal(labels, expected["test"][1])


def test_load_cifar_png_folders_sorted_by_class_then_number(tmp_path):
    expected, labels = _write_image_folders(tmp_path / "cifar10" / "train")
    images, got = V.load_cifar("cifar10", "train", tmp_path, progress=False, num_threads=2)
    # within a class "2.png" comes before "10.png" (numeric order), classes alphabetical
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(got, labels)


def test_load_cifar_jpg_and_jpeg_folders(tmp_path):
    expected, labels = _write_image_folders(
        tmp_path / "cifar10" / "test", suffixes=(".jpg", ".jpeg", ".png"), names=("a", "b")
    )
    images, got = V.load_cifar("cifar10", "test", tmp_path, progress=False)
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(got, labels)


def test_load_cifar100_png_folders_in_alphabetical_class_order(tmp_path):
    classes = [f"class_{i:03d}" for i in range(100)]
    for i, cls in reversed(list(enumerate(classes))):  # creation order must not matter
        (tmp_path / "cifar100" / "test" / cls).mkdir(parents=True)
        Image.fromarray(np.full((32, 32, 3), i, np.uint8)).save(
            tmp_path / "cifar100" / "test" / cls / "0.png"
        )
    images, labels = V.load_cifar("cifar100", "test", tmp_path, progress=False)
    np.testing.assert_array_equal(labels, np.arange(100))
    np.testing.assert_array_equal(images[:, 0, 0, 0], np.arange(100))


def test_pickles_win_over_image_folders(cifar10_pickles):
    root, expected = cifar10_pickles
    _write_image_folders(root / "cifar10" / "test")
    images, _ = V.load_cifar("cifar10", "test", root, cache=False)
    np.testing.assert_array_equal(images, expected["test"][0])


def test_cache_written_atomically_and_read_second_time(tmp_path):
    expected, labels = _write_image_folders(tmp_path / "cifar10" / "test")
    first = V.load_cifar("cifar10", "test", tmp_path, progress=False)
    cache = tmp_path / "generated" / "cifar10-test.npz"
    assert V.cifar_cache_path("cifar10", "test", tmp_path) == cache
    assert cache.is_file() and not _leftovers(tmp_path)
    # remove the source: the second load can only come from the cache (warned: not 10,000)
    for p in sorted((tmp_path / "cifar10" / "test").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (tmp_path / "cifar10" / "test").rmdir()
    with pytest.warns(UserWarning, match=r"20 images, not the 10,000 of the official CIFAR-10"):
        second = V.load_cifar("cifar10", "test", tmp_path)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_array_equal(second[0], expected)


def test_cache_off_writes_nothing(cifar10_pickles):
    root, _ = cifar10_pickles
    V.load_cifar("cifar10", "test", root, cache=False)
    assert not (root / "generated").exists()


def test_corrupt_cache_is_rebuilt(cifar10_pickles):
    root, expected = cifar10_pickles
    cache = root / "generated" / "cifar10-test.npz"
    cache.parent.mkdir()
    cache.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.warns(UserWarning, match="cifar10-test.npz"):
        images, _ = V.load_cifar("cifar10", "test", root)
    np.testing.assert_array_equal(images, expected["test"][0])
    np.testing.assert_array_equal(V.load_cifar("cifar10", "test", root)[0], images)


def test_cache_that_no_longer_matches_its_source_is_rebuilt(tmp_path):
    """A cache built from a partial image folder is not trusted once the folder is complete."""
    folder = tmp_path / "cifar10" / "test"
    _write_image_folders(folder)
    first, _ = V.load_cifar("cifar10", "test", tmp_path, progress=False)  # 20 images, cached
    extra = _images(1)[0]
    Image.fromarray(extra).save(folder / "truck" / "11.png")
    with pytest.warns(UserWarning, match=r"ignoring the cache .*cifar10-test.npz \(20 images"):
        images, labels = V.load_cifar("cifar10", "test", tmp_path, progress=False)
    assert len(images) == 21 and labels[-1] == 9
    np.testing.assert_array_equal(images[-1], extra)
    with np.load(V.cifar_cache_path("cifar10", "test", tmp_path)) as z:
        assert len(z["images"]) == 21  # rebuilt
    # a cache of the old format (no fingerprint) is not trusted either
    np.savez(V.cifar_cache_path("cifar10", "test", tmp_path), images=first,
             labels=np.zeros(len(first), np.int64), source=np.array(str(folder)))  # fmt: skip
    with pytest.warns(UserWarning, match="does not match the source found now"):
        assert len(V.load_cifar("cifar10", "test", tmp_path, progress=False)[0]) == 21


def test_generated_data_go_to_the_cache_folder_set_by_sncn_cache(tmp_path, monkeypatch):
    root, cache = tmp_path / "root", tmp_path / "cache"
    _write_image_folders(root / "cifar10" / "test")
    monkeypatch.setenv("SNCN_DATA", str(root))
    monkeypatch.delenv("SNCN_CACHE", raising=False)
    assert cache_root() == root / "generated"
    monkeypatch.setenv("SNCN_CACHE", str(cache))
    assert cache_root() == cache
    assert cache_root(tmp_path / "other") == tmp_path / "other" / "generated"  # explicit root
    V.load_cifar("cifar10", "test", progress=False)
    assert (cache / "cifar10-test.npz").is_file() and not (root / "generated").exists()


def test_read_only_folders_give_a_clear_message(cifar10_pickles, monkeypatch):
    root, expected = cifar10_pickles

    def refuse(*args, **kwargs):  # as a read-only file system (root ignores permission bits)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(data_package.tempfile, "TemporaryFile", refuse)
    monkeypatch.delenv("SNCN_CACHE", raising=False)
    # the cache is optional: the data still load, with a warning naming the folder and setting
    message = r"decoded-CIFAR cache into .*generated \(Permission denied\)\. Point \$SNCN_CACHE"
    with pytest.warns(UserWarning, match=message):
        images, _ = V.load_cifar("cifar10", "test", root)
    np.testing.assert_array_equal(images, expected["test"][0])
    # a download into a read-only data root stops before fetching anything
    with pytest.raises(PermissionError, match=r"CIFAR-100 download into .*cifar100.*SNCN_DATA"):
        V.download_cifar("cifar100", root)
    with pytest.raises(PermissionError, match=r"CIFAR-10-C download into .*SNCN_DATA"):
        V.download_cifar_c("cifar10", root)


def test_image_folder_files_and_read_images(tmp_path):
    expected, labels = _write_image_folders(tmp_path / "set", names=("2", "10", "b"))
    files, got, classes = V.image_folder_files(tmp_path / "set")
    assert classes == list(V.CIFAR10_CLASSES) and got == labels.tolist()
    assert [f.name for f in files[:3]] == ["2.png", "10.png", "b.png"]
    np.testing.assert_array_equal(V.read_images(files, progress=False), expected)
    # --size: shorter side to the size, centre crop
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 6:34] = 255  # white around the centre 20 columns, black at the sides
    Image.fromarray(wide).save(tmp_path / "wide.png")
    (out,) = V.read_images([tmp_path / "wide.png"], size=10, progress=False)
    assert out.shape == (10, 10, 3) and out.min() == 255  # the sides were cropped away
    with pytest.raises(ValueError, match="has no class folders"):
        V.image_folder_files(tmp_path / "set" / "cat")


def test_missing_cifar_names_the_folders_and_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        V.load_cifar("cifar10", "train", tmp_path)
    message = str(e.value)
    assert str(tmp_path / "cifar10" / "cifar-10-batches-py") in message
    assert str(tmp_path / "cifar10" / "train") in message
    assert "download=True" in message and "cifar-10-python.tar.gz" in message
    assert not (tmp_path / "cifar10").exists()


def test_wrong_folder_layout_is_named(tmp_path):
    for cls in ("cat", "dog", "frog"):
        (tmp_path / "cifar10" / "train" / cls).mkdir(parents=True)
    with pytest.raises(ValueError, match=r"found 3 class folders.*expected 10"):
        V.load_cifar("cifar10", "train", tmp_path)
    flat = tmp_path / "flat"
    (flat / "cifar10" / "test").mkdir(parents=True)
    Image.fromarray(_images(1)[0]).save(flat / "cifar10" / "test" / "0.png")
    with pytest.raises(ValueError, match="found 0 class folders"):
        V.load_cifar("cifar10", "test", flat)


def test_bad_images_are_named_and_nothing_is_cached(tmp_path):
    _write_image_folders(tmp_path / "cifar10" / "train")
    bad = tmp_path / "cifar10" / "train" / "dog" / "2.png"
    bad.write_bytes(b"\x89PNG truncated")
    with pytest.raises(ValueError, match="cannot decode .*dog/2.png"):
        V.load_cifar("cifar10", "train", tmp_path, progress=False)
    Image.fromarray(_images(1, size=16)[0]).save(bad)
    with pytest.raises(ValueError, match=r"dog/2.png is 16x16, expected 32x32"):
        V.load_cifar("cifar10", "train", tmp_path, progress=False)
    assert not (tmp_path / "generated").exists() and not _leftovers(tmp_path)


def test_truncated_pickle_is_named(cifar10_pickles):
    root, _ = cifar10_pickles
    path = root / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"data_batch_3 is truncated.*download=True"):
        V.load_cifar("cifar10", "train", root)
    assert not (root / "generated").exists()


def test_download_cifar_through_torchvision_url(tmp_path, monkeypatch):
    source = tmp_path / "source"
    expected = _write_pickles(source / "cifar-10-batches-py", "cifar10", per_file=2)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setattr(tv_datasets.CIFAR10, "url", archive.as_uri())
    monkeypatch.setattr(tv_datasets.CIFAR10, "tgz_md5", _md5(archive))
    root = tmp_path / "root"
    images, labels = V.load_cifar("cifar10", "test", root, download=True, progress=False)
    np.testing.assert_array_equal(images, expected["test"][0])
    assert (root / "cifar10" / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not (root / "cifar10" / "cifar-10-python.tar.gz").exists()
    assert not _leftovers(root)


@pytest.mark.skipif(
    not (data_root() / "cifar10" / "test").is_dir(), reason="no local CIFAR-10 in the data root"
)
def test_real_local_cifar10_test_split():
    images, labels = V.load_cifar("cifar10", "test", cache=False, progress=False)
    assert images.shape == (10_000, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels), [1000] * 10)
    assert np.all(np.diff(labels) >= 0)  # sorted by class


# ----------------------------------------------------------------------------------------------
# Serving arrays


def test_array_dataset_items():
    images, labels = _images(5), np.arange(5)
    ds = V.ArrayDataset(images, labels)
    x, y = ds[3]
    assert len(ds) == 5 and x.shape == (3, 32, 32) and x.dtype == torch.uint8 and y == 3
    np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), images[3])
    with pytest.raises(ValueError, match="uint8"):
        V.ArrayDataset(images.astype(np.float32), labels)


def test_array_loader_batches_shuffle_and_determinism():
    images, labels = _images(10), np.arange(10)
    loader = V.ArrayLoader(images, labels, 4)
    batches = list(loader)
    assert len(loader) == len(batches) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    assert batches[0][0].shape == (4, 3, 32, 32) and batches[0][0].dtype == torch.uint8
    np.testing.assert_array_equal(batches[1][0][0].permute(1, 2, 0).numpy(), images[4])

    def order(seed):
        g = torch.Generator().manual_seed(seed)
        shuffled = V.ArrayLoader(images, labels, 4, shuffle=True, generator=g, drop_last=True)
        assert len(shuffled) == 2
        return torch.cat([y for _, y in shuffled]).tolist()

    assert order(1) == order(1) and order(1) != order(2)
    assert len(set(order(1))) == 8
    full = V.ArrayLoader(images, labels, 3, shuffle=True, generator=torch.Generator())
    ys = torch.cat([y for _, y in full])
    assert sorted(ys.tolist()) == list(range(10))
    for x, y in full:  # images travel with their labels
        for xi, yi in zip(x, y, strict=True):
            np.testing.assert_array_equal(xi.permute(1, 2, 0).numpy(), images[yi])
    with pytest.raises(ValueError, match="Generator"):
        V.ArrayLoader(images, labels, 4, shuffle=True)


def test_array_loader_transform():
    loader = V.ArrayLoader(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4), 2, transform=V.normalize)
    x, _ = next(iter(loader))
    assert x.dtype == torch.float32 and torch.all(x == -1.0)


def test_array_loader_augments_whole_batches_and_an_epoch_shares_the_arrays():
    """An epoch of ``shuffled(g)`` draws exactly what a loader built with ``g`` and an augmenting
    transform drew (the CIFAR runs' numbers on the CPU), without copying the arrays."""
    images, labels = _images(20), np.arange(20)

    def old_style(seed):
        g = torch.Generator().manual_seed(seed)
        return V.ArrayLoader(images, labels, 8, shuffle=True, generator=g, drop_last=True,
                             transform=lambda b: V.normalize(V.random_crop_flip(b, g)))  # fmt: skip

    arrays = V.ArrayLoader(images, labels, 8, drop_last=True, augment=V.random_crop_flip,
                           transform=V.normalize)  # fmt: skip
    epoch = arrays.shuffled(torch.Generator().manual_seed(7))
    assert epoch.images is arrays.images and epoch.labels is arrays.labels
    assert len(epoch) == 2 and not arrays.shuffle and arrays.generator is None
    for (x, y), (x_old, y_old) in zip(epoch, old_style(7), strict=True):
        assert x.dtype == torch.float32 and torch.equal(x, x_old) and torch.equal(y, y_old)
    again = [x for x, _ in arrays.shuffled(torch.Generator().manual_seed(7))]
    other = [x for x, _ in arrays.shuffled(torch.Generator().manual_seed(8))]
    assert torch.equal(again[0], next(iter(old_style(7)))[0])
    assert not torch.equal(again[0], other[0])
    with pytest.raises(ValueError, match="shuffled"):
        next(iter(arrays))  # augment without a generator


def test_device_generator_is_the_generator_itself_on_its_own_device():
    g = torch.Generator().manual_seed(3)
    assert device_generator(g, "cpu") is g and device_generator(g, torch.device("cpu")) is g


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cifar_training_batches_on_cuda_make_no_host_sync():
    """The whole epoch (permutation, slices, crop, flip, normalisation) runs on the device from
    a generator there, seeded from the epoch's CPU generator: deterministic, never a sync."""
    from sncn.experiments.cifar_c import training_batches

    images, labels = _images(64), np.arange(64)
    batches = training_batches(images, labels, 16, torch.device("cuda"))

    def epoch(seed):
        out = []
        torch.cuda.set_sync_debug_mode("error")
        try:
            for x, y in batches(0, torch.Generator().manual_seed(seed)):
                out.append((x, y))
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return out

    first, same, other = epoch(1), epoch(1), epoch(2)
    assert len(first) == 4 and all(x.is_cuda and y.is_cuda for x, y in first)
    assert first[0][0].dtype == torch.float32 and first[0][0].shape == (16, 3, 32, 32)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, same, strict=True))
    assert not torch.equal(first[0][1], other[0][1])
    g = torch.Generator().manual_seed(1)
    assert device_generator(g, "cuda").device.type == "cuda"


# ----------------------------------------------------------------------------------------------
# Batch augmentation


def _coordinate_images(n: int) -> torch.Tensor:
    """uint8 (n, 3, 32, 32): channel 0 = row + 1, channel 1 = column + 1, channel 2 = 7."""
    r = torch.arange(1, 33, dtype=torch.uint8)
    one = torch.stack(
        [r[:, None].expand(32, 32), r[None, :].expand(32, 32), torch.full((32, 32), 7)]
    )
    return one.to(torch.uint8).expand(n, 3, 32, 32)


def test_random_crop_flip_shapes_dtype_determinism():
    for dtype in (torch.uint8, torch.float32):
        x = torch.arange(2 * 3 * 32 * 32).reshape(2, 3, 32, 32).to(dtype)
        out = V.random_crop_flip(x, torch.Generator().manual_seed(0))
        assert out.shape == x.shape and out.dtype == dtype and out.is_contiguous()
    x = torch.from_numpy(_images(16)).permute(0, 3, 1, 2)
    a = V.random_crop_flip(x, torch.Generator().manual_seed(3))
    b = V.random_crop_flip(x, torch.Generator().manual_seed(3))
    c = V.random_crop_flip(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_crop_flip_rates_and_zero_padding():
    n, p = 8000, 4
    x = _coordinate_images(n)
    out = V.random_crop_flip(x, torch.Generator().manual_seed(0), padding=p)
    # the centre pixel is always inside the image: it reveals the offsets and the flip
    dy = out[:, 0, 16, 16].long() - 1 - 16 + p  # (N,) in [0, 2p]
    flipped = out[:, 1, 16, 17].long() - out[:, 1, 16, 16].long() == -1  # (N,)
    col = out[:, 1, 16, 16].long() - 1
    dx = torch.where(flipped, col - (31 - 16) + p, col - 16 + p)
    assert abs(flipped.float().mean().item() - 0.5) < 0.03
    for offsets in (dy, dx):
        freq = torch.bincount(offsets, minlength=2 * p + 1).float() / n
        assert freq.shape == (9,) and torch.all((freq - 1 / 9).abs() < 0.02)
    # each output equals the reference crop of the zero-padded image, flipped when detected
    padded = F.pad(x[:1], (p, p, p, p))[0]  # (3, 40, 40)
    for i in range(200):
        ref = padded[:, dy[i] : dy[i] + 32, dx[i] : dx[i] + 32]
        ref = ref.flip(-1) if flipped[i] else ref
        assert torch.equal(out[i], ref)
    # shifted crops bring in zero rows: dy = 0 (and no horizontal shift) means exactly the top
    # p rows are padding
    top = out[(dy == 0) & (dx == p)]
    assert len(top) > 0 and torch.all(top[:, :, :p] == 0) and torch.all(top[:, :, p:] > 0)
    # flip_prob=0 and padding=0 give the identity
    same = V.random_crop_flip(x[:10], torch.Generator(), padding=0, flip_prob=0.0)
    assert torch.equal(same, x[:10])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augmentation_on_cuda_matches_cpu_with_a_cpu_generator():
    x = torch.from_numpy(_images(64)).permute(0, 3, 1, 2)
    cpu = V.random_crop_flip(x, torch.Generator().manual_seed(5))
    gpu = V.random_crop_flip(x.cuda(), torch.Generator().manual_seed(5))
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
    g = torch.Generator(device="cuda").manual_seed(5)
    assert V.random_crop_flip(x.cuda(), g).device.type == "cuda"

    def augment(batch):
        return V.normalize(V.random_crop_flip(batch, g))

    loader = V.ArrayLoader(
        _images(10), np.arange(10), 4, shuffle=True, generator=g, device="cuda", transform=augment
    )
    xb, yb = next(iter(loader))
    assert xb.is_cuda and yb.is_cuda and xb.dtype == torch.float32


def test_normalize():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    out = V.normalize(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out[0, :, 0], torch.tensor([-1.0, 1.0]).expand(3, 2))
    y = V.normalize(torch.full((3, 2, 2), 0.5), mean=(0.5, 0.25, 0.0), std=(1.0, 0.25, 2.0))
    assert torch.allclose(y[:, 0, 0], torch.tensor([0.0, 1.0, 0.25]))
    assert V.CIFAR_MEAN == (0.5, 0.5, 0.5) and V.CIFAR_STD == (0.5, 0.5, 0.5)


# ----------------------------------------------------------------------------------------------
# Download helpers


def test_download_verifies_md5_and_leaves_no_part(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 3000)
    dest = tmp_path / "out" / "file.bin"
    assert dl.download(src.as_uri(), dest, _md5(src), progress=False) == dest
    assert dest.read_bytes() == src.read_bytes() and not _leftovers(tmp_path)


def test_download_wrong_md5_deletes_everything(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(dl.ChecksumError, match="expected 0+"):
        dl.download(src.as_uri(), dest, "0" * 32, progress=False)
    assert not dest.exists() and not _leftovers(tmp_path)


def test_stale_part_is_never_used_when_server_cannot_resume(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"good bytes " * 100)
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(b"GARBAGE FROM AN OLD RUN")
    dl.download(src.as_uri(), dest, _md5(src), progress=False)  # file:// ignores Range
    assert dest.read_bytes() == src.read_bytes() and not _leftovers(tmp_path)


def test_existing_file_with_wrong_md5_is_replaced(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"fresh")
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"stale")
    dl.download(src.as_uri(), dest, _md5(src), progress=False)
    assert dest.read_bytes() == b"fresh"


def _ranged_server(payload: bytes, calls: list[int]):
    def open_url(url, start=0):
        calls.append(start)
        return io.BytesIO(payload[start:]), len(payload) - start, start > 0

    return open_url


def test_download_resumes_a_part_file(tmp_path, monkeypatch):
    payload = bytes(range(256)) * 40
    calls: list[int] = []
    monkeypatch.setattr(dl, "open_url", _ranged_server(payload, calls))
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(payload[:1000])
    dl.download("https://example.invalid/file.bin", dest, hashlib.md5(payload).hexdigest())
    assert calls == [1000] and dest.read_bytes() == payload and not _leftovers(tmp_path)


def test_resumed_download_with_bad_prefix_restarts_once(tmp_path, monkeypatch):
    payload = b"0123456789" * 50
    calls: list[int] = []
    monkeypatch.setattr(dl, "open_url", _ranged_server(payload, calls))
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(b"X" * 100)  # wrong bytes from an earlier run
    dl.download("https://example.invalid/file.bin", dest, hashlib.md5(payload).hexdigest())
    assert calls == [100, 0] and dest.read_bytes() == payload


def test_complete_part_is_renamed_and_unsatisfiable_range_restarts(tmp_path, monkeypatch):
    payload = b"abc" * 100
    good = hashlib.md5(payload).hexdigest()
    calls: list[int] = []
    ranged = _ranged_server(payload, calls)

    def server(url, start=0):
        if start >= len(payload):
            raise urllib.error.HTTPError(url, 416, "Range Not Satisfiable", {}, None)
        return ranged(url, start)

    monkeypatch.setattr(dl, "open_url", server)
    (tmp_path / "done.bin.part").write_bytes(payload)  # finished earlier, never renamed
    dl.download("https://example.invalid/x", tmp_path / "done.bin", good, progress=False)
    assert calls == [] and (tmp_path / "done.bin").read_bytes() == payload
    (tmp_path / "long.bin.part").write_bytes(payload + b"junk")  # longer than the file
    dl.download("https://example.invalid/x", tmp_path / "long.bin", good, progress=False)
    assert calls == [0] and (tmp_path / "long.bin").read_bytes() == payload
    assert not _leftovers(tmp_path)


def test_network_error_names_url_and_keeps_part(tmp_path, monkeypatch):
    def broken(url, start=0):
        raise OSError("connection refused")

    monkeypatch.setattr(dl, "open_url", broken)
    with pytest.raises(OSError, match=r"could not download https://example.invalid/f.*resumed"):
        dl.download("https://example.invalid/f", tmp_path / "f", "0" * 32, progress=False)


def test_extract_tar_rejects_members_outside_top_and_truncated_archives(tmp_path):
    good = tmp_path / "good"
    (good / "TOP").mkdir(parents=True)
    (good / "TOP" / "a.txt").write_text("a")
    (good / "other.txt").write_text("b")
    archive = tmp_path / "mixed.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(good / "TOP", arcname="TOP")
        tar.add(good / "other.txt", arcname="other.txt")
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match="outside TOP"):
        dl.extract_tar(archive, dest, "TOP")
    assert not (dest / "TOP").exists() and not _leftovers(tmp_path)

    whole = tmp_path / "whole.tar"
    with tarfile.open(whole, "w") as tar:
        tar.add(good / "TOP", arcname="TOP")
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(whole.read_bytes()[:700])
    with pytest.raises(ValueError, match=r"truncated.tar is not a complete tar"):
        dl.extract_tar(truncated, dest, "TOP")
    assert not (dest / "TOP").exists() and not _leftovers(tmp_path)
    assert (dl.extract_tar(whole, dest, "TOP") / "a.txt").read_text() == "a"


# ----------------------------------------------------------------------------------------------
# CIFAR-C


def _write_cifar_c(folder: Path, n: int = 4, corruptions=("gaussian_noise", "fog")) -> None:
    """Layout of CIFAR-10-C: pixel value = 10 * severity + index within the severity."""
    folder.mkdir(parents=True)
    labels = np.tile(np.arange(n) % 10, 5).astype(np.uint8)  # official labels.npy is uint8
    np.save(folder / "labels.npy", labels)
    for c in corruptions:
        values = np.concatenate([10 * s + np.arange(n) for s in range(1, 6)]).astype(np.uint8)
        np.save(
            folder / f"{c}.npy", np.broadcast_to(values[:, None, None, None], (5 * n, 32, 32, 3))
        )


def test_load_cifar_c_slices_by_severity_with_mmap(tmp_path, monkeypatch):
    _write_cifar_c(tmp_path / "CIFAR-10-C", n=4)
    modes = []
    real_load = np.load

    def spy(*args, **kwargs):
        modes.append(kwargs.get("mmap_mode"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    images, labels = V.load_cifar_c("cifar10", "fog", 3, root=tmp_path)
    assert modes == ["r", "r"]
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8
    assert isinstance(images, np.ndarray) and not isinstance(images, np.memmap)
    np.testing.assert_array_equal(images[:, 0, 0, 0], [30, 31, 32, 33])
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 2, 3]


def test_load_cifar_c_from_a_generated_directory(tmp_path):
    _write_cifar_c(tmp_path / "generated", n=7)
    images, labels = V.load_cifar_c(tmp_path / "generated", "gaussian_noise", 5)
    assert len(images) == len(labels) == 7
    np.testing.assert_array_equal(images[:, 5, 5, 1], 50 + np.arange(7))


def test_load_cifar_c_errors_name_the_file(tmp_path):
    folder = tmp_path / "CIFAR-10-C"
    _write_cifar_c(folder)
    with pytest.raises(FileNotFoundError, match=r"snow.npy not found.*fog, gaussian_noise"):
        V.load_cifar_c("cifar10", "snow", 1, root=tmp_path)
    path = folder / "fog.npy"
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"fog.npy is truncated or corrupt.*download_cifar_c"):
        V.load_cifar_c("cifar10", "fog", 1, root=tmp_path)
    (folder / "labels.npy").write_bytes(b"")
    with pytest.raises(ValueError, match="labels.npy is truncated"):
        V.load_cifar_c("cifar10", "gaussian_noise", 1, root=tmp_path)
    np.save(folder / "labels.npy", np.zeros(7, np.uint8))
    with pytest.raises(ValueError, match=r"shape \(7,\); expected \(5 \* n,\)"):
        V.load_cifar_c("cifar10", "gaussian_noise", 1, root=tmp_path)
    with pytest.raises(
        FileNotFoundError, match=r"CIFAR-100-C not found.*zenodo.org/record/3555552"
    ):
        V.load_cifar_c("cifar100", "fog", 1, root=tmp_path)
    with pytest.raises(ValueError, match="severity"):
        V.load_cifar_c("cifar10", "fog", 6, root=tmp_path)


def _cifar_c_tar(tmp_path: Path, corruptions=("gaussian_noise", "fog")) -> Path:
    _write_cifar_c(tmp_path / "src" / "CIFAR-10-C", corruptions=corruptions)
    archive = tmp_path / "CIFAR-10-C-src.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "src" / "CIFAR-10-C", arcname="CIFAR-10-C")
    return archive


def test_download_cifar_c(tmp_path, monkeypatch):
    monkeypatch.setitem(V.OFFICIAL_SIZES, "test", 4)  # a tiny "official" CIFAR-10-C
    archive = _cifar_c_tar(tmp_path, corruptions=CORRUPTIONS)
    entry = ("CIFAR-10-C", archive.as_uri(), _md5(archive))
    monkeypatch.setitem(V.CIFAR_C_ARCHIVES, "cifar10", entry)
    root = tmp_path / "root"
    folder = V.download_cifar_c("cifar10", root, progress=False)
    assert folder == root / "CIFAR-10-C" and (folder / "labels.npy").is_file()
    assert not (root / "CIFAR-10-C.tar").exists() and not _leftovers(root)
    images, _ = V.load_cifar_c("cifar10", "fog", 2, root=root)
    np.testing.assert_array_equal(images[:, 0, 0, 0], [20, 21, 22, 23])
    assert V.official_cifar_c("cifar10", root) == folder
    # complete: no download (the URL now points nowhere)
    monkeypatch.setitem(V.CIFAR_C_ARCHIVES, "cifar10", ("CIFAR-10-C", "file:///none.tar", "0"))
    assert V.download_cifar_c("cifar10", root) == folder
    # a truncated file: downloaded again, and the folder replaced whole
    monkeypatch.setitem(V.CIFAR_C_ARCHIVES, "cifar10", entry)
    fog = folder / "fog.npy"
    fog.write_bytes(fog.read_bytes()[:1000])
    assert V.download_cifar_c("cifar10", root, progress=False) == folder
    assert V.official_cifar_c("cifar10", root) == folder and not _leftovers(root)


def test_truncated_official_cifar_c_names_the_file_and_the_download_command(tmp_path, monkeypatch):
    monkeypatch.setitem(V.OFFICIAL_SIZES, "test", 4)
    assert V.official_cifar_c("cifar10", tmp_path) is None  # no folder: generate instead
    folder = tmp_path / "CIFAR-10-C"
    _write_cifar_c(folder, corruptions=CORRUPTIONS)
    assert V.official_cifar_c("cifar10", tmp_path) == folder
    fog = folder / "fog.npy"
    fog.write_bytes(fog.read_bytes()[:1000])
    command = re.escape(
        """python -c "from sncn.data.vision import download_cifar_c; download_cifar_c('cifar10'"""
    )
    with pytest.raises(ValueError, match=rf"fog.npy is truncated(.|\n)*{command}"):
        V.official_cifar_c("cifar10", tmp_path)
    fog.unlink()
    with pytest.raises(ValueError, match=r"fog.npy is missing.*incomplete"):
        V.official_cifar_c("cifar10", tmp_path)
    np.save(fog, np.zeros((20, 32, 32, 3), np.uint8))
    np.save(folder / "labels.npy", np.zeros(15, np.uint8))  # 3 per severity, not 4
    with pytest.raises(ValueError, match=r"labels.npy has shape \(15,\), expected \(20,\)"):
        V.official_cifar_c("cifar10", tmp_path)


def test_truncated_official_cifar_c_stops_a_run_before_training(
    cifar10_pickles, tmp_path, monkeypatch
):
    from sncn.experiments import cifar_c

    root, _ = cifar10_pickles
    monkeypatch.setitem(V.OFFICIAL_SIZES, "test", 4)
    _write_cifar_c(root / "CIFAR-10-C", corruptions=CORRUPTIONS)
    path = root / "CIFAR-10-C" / "snow.npy"
    path.write_bytes(path.read_bytes()[:5000])

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(cifar_c, "fit", no_training)
    with pytest.raises(ValueError, match=r"snow.npy is truncated(.|\n)*download_cifar_c"):
        cifar_c.run("cifar10", "wrn", "basic", tmp_path / "results", epochs=1, batch_size=2,
                    model_kwargs={"depth": 10, "widen_factor": 1}, root=root, device="cpu",
                    progress=False)  # fmt: skip


def test_download_cifar_c_wrong_md5_leaves_nothing(tmp_path, monkeypatch):
    archive = _cifar_c_tar(tmp_path)
    monkeypatch.setitem(V.CIFAR_C_ARCHIVES, "cifar10", ("CIFAR-10-C", archive.as_uri(), "f" * 32))
    root = tmp_path / "root"
    with pytest.raises(dl.ChecksumError, match="CIFAR-10-C.tar.part has md5"):
        V.download_cifar_c("cifar10", root, progress=False)
    assert sorted(p.name for p in root.iterdir()) == []


def test_cifar_c_md5s_are_the_published_ones():
    assert V.CIFAR_C_ARCHIVES["cifar10"][2] == "56bf5dcef84df0e2308c6dcbcbbd8499"
    assert V.CIFAR_C_ARCHIVES["cifar100"][2] == "11f0ed0f1191edbf9fa23466ae6021d3"


# ----------------------------------------------------------------------------------------------
# ImageNet, ImageNet-C, the sample


def _write_wnid_folders(folder: Path, wnids=("n01440764", "n01443537"), per_class=2) -> None:
    for w in wnids:
        (folder / w).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(_images(1, size=64)[0]).save(folder / w / f"{w}_{i}.JPEG")


def test_imagenet_folder_train_and_val(tmp_path):
    mapping = {"n01440764": 0, "n01443537": 1}
    _write_wnid_folders(tmp_path / "imagenet" / "train")
    _write_wnid_folders(tmp_path / "imagenet" / "validation")  # the paper code's name
    train = V.imagenet_folder("train", tmp_path, class_to_idx=mapping)
    val = V.imagenet_folder("val", tmp_path, class_to_idx=mapping)
    assert len(train) == len(val) == 4 and [y for _, y in val.samples] == [0, 0, 1, 1]
    x, y = train[3]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and y == 1
    with pytest.raises(ValueError, match="not ImageNet's 1,000.*class_to_idx"):
        V.imagenet_folder("train", tmp_path)
    with pytest.raises(FileNotFoundError, match="image-net.org"):
        V.imagenet_folder("train", tmp_path / "nowhere")


def test_imagenet_c_folder_layouts_and_subset_labels(tmp_path):
    _write_wnid_folders(tmp_path / "ImageNet-C" / "fog" / "3", wnids=("n01443537",))
    ds = V.imagenet_c_folder("fog", 3, tmp_path, class_to_idx={"n01440764": 0, "n01443537": 1})
    assert len(ds) == 2 and {y for _, y in ds.samples} == {1}
    assert ds[0][0].shape == (3, 224, 224)
    gen = tmp_path / "generated"
    _write_wnid_folders(gen / "snow" / "1", wnids=("n01440764",))
    ds = V.imagenet_c_folder("snow", 1, directory=gen, class_to_idx={"n01440764": 7})
    assert [y for _, y in ds.samples] == [7, 7]
    with pytest.raises(FileNotFoundError, match=r"snow/2 not found.*zenodo.org/record/2235448"):
        V.imagenet_c_folder("snow", 2, directory=gen)
    (gen / "snow" / "4").mkdir()
    with pytest.raises(FileNotFoundError, match="does not have the layout"):
        V.imagenet_c_folder("snow", 4, directory=gen, class_to_idx={})


def _write_sample(root: Path, wnids=("n01440764", "n01443537", "n01484850")) -> None:
    images = root / "imagenet_sample" / "images"
    images.mkdir(parents=True)
    with open(root / "imagenet_sample" / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "wnid", "class_index", "name"])
        for i, w in enumerate(wnids):
            name = f"{i:03d}_{w}.jpg"
            Image.fromarray(_images(1, size=256)[0]).save(images / name)
            writer.writerow([name, w, i, f"class{i}"])


def test_imagenet_sample_and_class_map(tmp_path):
    _write_sample(tmp_path)
    ds = V.ImageNetSample(tmp_path)
    x, y = ds[2]
    assert len(ds) == 3 and x.shape == (3, 224, 224) and y == 2
    assert V.imagenet_class_to_idx(tmp_path) == {"n01440764": 0, "n01443537": 1, "n01484850": 2}
    (tmp_path / "imagenet_sample" / "images" / "001_n01443537.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="001_n01443537.jpg"):
        V.ImageNetSample(tmp_path)
    with pytest.raises(FileNotFoundError, match="labels.csv not found.*prepare-data"):
        V.ImageNetSample(tmp_path / "nowhere")


@pytest.mark.skipif(
    not (data_root() / "imagenet_sample" / "labels.csv").is_file(), reason="no ImageNet sample"
)
def test_real_imagenet_sample():
    ds = V.ImageNetSample()
    assert len(ds) == 1000 and sorted(y for _, y in ds.samples) == list(range(1000))
    x, y = ds[0]
    assert x.shape == (3, 224, 224) and y == 0


def test_imagenet_transforms():
    image = Image.fromarray(_images(1, size=300)[0])
    torch.manual_seed(0)
    for train in (True, False):
        assert V.imagenet_transform(train)(image).shape == (3, 224, 224)
    names = [type(t).__name__ for t in V.imagenet_transform(False).transforms]
    assert names == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    names = [type(t).__name__ for t in V.imagenet_transform(True).transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
