"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017, arXiv 1708.07747) read from its gzipped IDX files.

The files come from the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``); ``$MODGAP_FASHION_MNIST`` or ``root=`` point elsewhere.
Parsing is plain numpy: an IDX file is a big-endian header (magic ``0x0000 TT ND``: element type,
number of dimensions), ``ND`` uint32 sizes, then the raw array.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, ModgapError

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_ROOT",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "read_idx",
]

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")

#: label -> class name, in the order of the dataset's label ids
CLASS_NAMES: tuple[str, ...] = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# IDX element type code -> numpy dtype (big-endian where it matters)
_IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

INSTALL_HINT = (
    "Fashion-MNIST not found. Install the Debian package: "
    "`sudo apt-get install dataset-fashion-mnist` (files go to /usr/share/datasets/fashion-mnist), "
    "or set MODGAP_FASHION_MNIST to a folder holding the four *-ubyte.gz files."
)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a numpy array of its stored type and shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise InputError(f"cannot read IDX file ({e})", str(path)) from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise InputError("not an IDX file (bad magic number)", str(path))
    dtype, ndim = _IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InputError("truncated IDX header", str(path))
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape)) if shape else 1
    if len(data) - header != count * dtype.itemsize:
        raise InputError(
            f"IDX size mismatch: header says {shape} ({count * dtype.itemsize} bytes), "
            f"file holds {len(data) - header}",
            str(path),
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def find_fashion_mnist(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the Fashion-MNIST files (else a ModgapError saying how to install)."""
    candidates = [Path(root)] if root is not None else []
    if root is None and os.environ.get("MODGAP_FASHION_MNIST"):
        candidates.append(Path(os.environ["MODGAP_FASHION_MNIST"]))
    if root is None:
        candidates.append(DEFAULT_ROOT)
    for folder in candidates:
        if all((folder / name).is_file() for pair in _FILES.values() for name in pair):
            return folder
    where = ", ".join(str(c) for c in candidates)
    raise ModgapError(f"{INSTALL_HINT} (looked in: {where})")


def load_fashion_mnist(
    split: str = "test", root: str | os.PathLike | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of Fashion-MNIST.

    Parameters
    ----------
    split : {"train", "test"}
        60,000 training or 10,000 test images.
    root : path, optional
        Folder with the gzipped IDX files (default: ``$MODGAP_FASHION_MNIST``, then the Debian
        package's folder).
    limit : int, optional
        Keep only the first ``limit`` images.

    Returns
    -------
    images : ndarray of uint8, shape (n, 28, 28)
        Grey levels as stored (the garment is bright on a black background).
    labels : ndarray of int64, shape (n,)
        Indices into :data:`CLASS_NAMES`.
    """
    if split not in _FILES:
        raise ModgapError(f"unknown Fashion-MNIST split {split!r} (expected 'train' or 'test')")
    folder = find_fashion_mnist(root)
    image_file, label_file = (folder / name for name in _FILES[split])
    images = read_idx(image_file)
    labels = read_idx(label_file).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise InputError(
            f"unexpected shapes: images {images.shape}, labels {labels.shape}", str(folder)
        )
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels
