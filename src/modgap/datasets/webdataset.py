"""Webdataset tar shards: the layout img2dataset and CLIP_benchmark's ``wds/`` sets write.

A shard is a plain (or gzip/bzip2/xz compressed) tar. Its files are grouped into samples by key,
the file name up to the first dot of its last path component (``s0000012.jpg``,
``s0000012.txt`` -> key ``s0000012``, fields ``jpg`` and ``txt``), exactly as the
``webdataset`` package groups them; a sample's files are consecutive in the tar. modgap reads:

* the image: the one field named ``jpg``, ``jpeg``, ``png``, ``webp``, ``bmp``, ``gif``,
  ``tif``/``tiff`` or ``ppm``/``pgm``/``pbm``/``pnm`` (:data:`IMAGE_FIELDS`);
* the captions: ``txt`` (by default each non-empty line is a caption: CLIP_benchmark's
  retrieval sets join an image's captions with newlines; ``txt_captions="file"`` keeps the
  whole file as one caption), or, without a usable ``txt``, the ``caption`` / ``captions`` /
  ``text`` / ``title`` field of ``json`` (img2dataset writes its caption there too);
* ``cls``: an integer class label (all samples or none);
* ``json``: besides a caption, its fields are kept (flattened to ``a.b`` names) as metadata
  columns, as clip-retrieval's ``--enable_metadata`` keeps them.

Every other file (``.npy``, ``.pyd``, ``.pickle``, masks such as ``seg.png``, ...) is skipped
without being read: nothing in a shard is ever unpickled. Top-level ``__name__`` files and
names without an extension are not samples (the webdataset package skips them too).

Reading is two streaming passes, never extracting to disk: :func:`read_webdataset` walks each
shard once for its keys and captions (image data is skipped over, not read), so bad input
fails before any model loads; :meth:`WebDatasetIndex.images` then yields the decoded images
one at a time in sample order, so an encoder holds one batch of images, not the data set.
"""

from __future__ import annotations

import json
import lzma
import os
import re
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from .._progress import progress as progress_bar
from ..errors import InputError
from .caption_file import CAPTION_KEYS
from .shards import SHARD_SUFFIXES, expand_braces, find_shards, shard_names

__all__ = [
    "IMAGE_FIELDS",
    "SHARD_SUFFIXES",
    "WebDatasetIndex",
    "expand_braces",
    "find_shards",
    "read_webdataset",
]

IMAGE_FIELDS = (
    "jpg",
    "jpeg",
    "png",
    "webp",
    "bmp",
    "gif",
    "tif",
    "tiff",
    "ppm",
    "pgm",
    "pbm",
    "pnm",
)
JSON_CAPTION_KEYS = ("caption", "captions", *(k for k in CAPTION_KEYS if k != "caption"))
TXT_CAPTIONS = ("lines", "file")

# the webdataset package's own split of a member name into (key, field)
_KEY_FIELD = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_SMALL_FIELDS = ("txt", "json", "cls")
# what a damaged or cut-off archive raises, from tarfile itself or its decompressors
_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
_COMPRESSION = ((b"\x1f\x8b", "gz"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"))


# ---------------------------------------------------------------------------------- the tar --
def _open_tar(path: Path) -> tuple[tarfile.TarFile, bool]:
    """Open a shard for reading members in order; compression is told by its first bytes.

    Returns the open tar and whether it is compressed.
    """
    source = os.fspath(path)
    try:
        with path.open("rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise InputError(f"cannot read shard ({e.strerror or e})", source) from None
    if not magic:
        raise InputError("empty file, not a tar shard", source)
    kind = next((name for sig, name in _COMPRESSION if magic.startswith(sig)), "")
    try:
        return tarfile.open(source, f"r:{kind}"), bool(kind)
    except _TAR_ERRORS as e:
        raise InputError(f"not a readable tar file ({e})", source) from None


def _check_end(tar: tarfile.TarFile, compressed: bool, source: str) -> None:
    """Refuse a shard that stops before its end-of-archive block.

    ``tarfile`` ends its iteration quietly at a cut-off or unreadable header, so a truncated
    download would otherwise pass for a shorter shard. A compressed shard is read to its end,
    so the decompressor checks its length and checksum too.
    """
    tar.fileobj.seek(tar.offset)
    block = tar.fileobj.read(tarfile.BLOCKSIZE)
    if len(block) != tarfile.BLOCKSIZE or block.count(0) != tarfile.BLOCKSIZE:
        raise InputError(
            "truncated or damaged tar: it ends without the end-of-archive block", source
        )
    while compressed and tar.fileobj.read(1 << 16):
        pass  # only the padding after the end block is left


def _members(tar: tarfile.TarFile, source: str) -> Iterator[tuple[str, str, tarfile.TarInfo]]:
    """``(key, field, member)`` for the sample files of an open shard, in tar order."""
    for info in tar:
        name = info.name
        if not info.isreg() or ("/" not in name and name.startswith("__") and name.endswith("__")):
            continue
        m = _KEY_FIELD.match(name)
        if m is None:  # no extension: not part of a sample
            continue
        yield m.group(1), m.group(2).lower(), info


class _Sample:
    """One sample while a shard is scanned: its image member and its small fields' bytes."""

    __slots__ = ("fields", "images", "key")

    def __init__(self, key: str):
        self.key = key
        self.images: list[tuple[str, tarfile.TarInfo]] = []
        self.fields: dict[str, bytes] = {}


def _samples(path: Path) -> Iterator[_Sample]:
    """The samples of one shard; small fields are read, image data skipped over."""
    source = os.fspath(path)
    tar, compressed = _open_tar(path)
    try:
        current: _Sample | None = None
        seen: set[str] = set()
        n_members = 0
        for key, field, info in _members(tar, source):
            n_members += 1
            if current is None or key != current.key:
                if current is not None:
                    yield current
                if key in seen:
                    raise InputError(
                        f"sample {key!r} appears twice (its files are not together in the tar)",
                        source,
                    )
                seen.add(key)
                current = _Sample(key)
            if field in IMAGE_FIELDS:
                current.images.append((field, info))
            elif field in _SMALL_FIELDS:
                if field in current.fields:
                    raise InputError(f"sample {key!r} has two .{field} files", source)
                # read now, in tar order: seeking back in a compressed shard restarts it
                current.fields[field] = tar.extractfile(info).read()
        _check_end(tar, compressed, source)
        if current is None:
            raise InputError("no samples in this shard (an empty tar)", source)
        yield current
    except _TAR_ERRORS as e:
        raise InputError(f"truncated or damaged tar ({e})", source) from None
    finally:
        tar.close()


def _text(data: bytes, key: str, field: str, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"sample {key!r}: its .{field} is not UTF-8 text", source) from None


def _captions(sample: _Sample, txt_captions: str, source: str) -> list[str]:
    key, fields = sample.key, sample.fields
    if "txt" in fields:
        text = _text(fields["txt"], key, "txt", source)
        lines = text.splitlines() if txt_captions == "lines" else [text]
        captions = [c.strip() for c in lines if c.strip()]
        if captions:
            return captions
    if "json" in fields:
        try:
            obj = json.loads(_text(fields["json"], key, "json", source))
        except json.JSONDecodeError as e:
            raise InputError(f"sample {key!r}: its .json is not JSON ({e.msg})", source) from None
        if isinstance(obj, dict):
            for name in JSON_CAPTION_KEYS:
                value = obj.get(name)
                values = [value] if isinstance(value, str) else value
                if isinstance(values, list):
                    captions = [v.strip() for v in values if isinstance(v, str) and v.strip()]
                    if captions:
                        return captions
    where = "its .txt is empty" if "txt" in fields else "no .txt"
    if "json" in fields:
        where += f" and its .json has no {'/'.join(JSON_CAPTION_KEYS)} text"
    raise InputError(f"sample {key!r} has no caption ({where})", source)


def _label(sample: _Sample, source: str) -> int | None:
    if "cls" not in sample.fields:
        return None
    text = _text(sample.fields["cls"], sample.key, "cls", source).strip()
    try:
        label = int(text)
    except ValueError:
        raise InputError(
            f"sample {sample.key!r}: its .cls is not an integer label ({text[:40]!r})", source
        ) from None
    if label < 0:
        raise InputError(f"sample {sample.key!r}: negative class label {label}", source)
    return label


def _json_fields(sample: _Sample, source: str) -> dict | None:
    """The sample's ``.json`` object flattened to ``{"a.b": value}`` (nested objects joined with
    ``.``, as clip-retrieval's ``--enable_metadata`` flattens them with ``pandas.json_normalize``);
    None without a ``.json`` object."""
    if "json" not in sample.fields:
        return None
    try:
        obj = json.loads(_text(sample.fields["json"], sample.key, "json", source))
    except json.JSONDecodeError as e:
        raise InputError(
            f"sample {sample.key!r}: its .json is not JSON ({e.msg})", source
        ) from None
    if not isinstance(obj, dict):
        return None
    out: dict = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict) and v:
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v

    walk(obj, "")
    return out


def _image_member(sample: _Sample, source: str) -> str:
    if not sample.images:
        raise InputError(f"sample {sample.key!r} has no image (.jpg, .png, .webp, ...)", source)
    if len(sample.images) > 1:
        fields = ", ".join(f".{f}" for f, _ in sample.images)
        raise InputError(f"sample {sample.key!r} has several images ({fields})", source)
    return sample.images[0][1].name


# -------------------------------------------------------------------------------- the index --
class WebDatasetIndex:
    """What a set of shards holds, without the images: keys, captions, labels, pairing.

    Built by :func:`read_webdataset`. Rows follow the shards in order and the samples in tar
    order. :meth:`images` streams the images in the same order.

    Attributes
    ----------
    shards : list of Path
        The shard files.
    shard_names : list of str
        Their names in the ids (paths relative to the shards' common folder).
    image_ids : list of str
        ``SHARD/MEMBER`` per image, e.g. ``000000.tar/000000012.jpg``.
    keys : list of str
        The sample key of each image.
    captions : list of str
        Every caption, grouped by image.
    text_to_image : ndarray (n_captions,) of int
        The image each caption describes.
    labels : ndarray (n_images,) of int, or None
        The ``.cls`` labels, when the samples have them.
    json_fields : list of (dict or None), or None
        Each sample's ``.json`` flattened (:func:`_json_fields`); None when no sample has one.
    """

    def __init__(self, shards, shard_names, shard_sizes, members, keys, captions,
                 text_to_image, labels, json_fields=None):  # fmt: skip
        self.shards: list[Path] = shards
        self.shard_names: list[str] = shard_names
        self.shard_sizes: list[int] = shard_sizes
        self.members: list[str] = members
        self.keys: list[str] = keys
        self.captions: list[str] = captions
        self.text_to_image: np.ndarray = text_to_image
        self.labels: np.ndarray | None = labels
        self.json_fields: list[dict | None] | None = json_fields

    @property
    def n_images(self) -> int:
        return len(self.members)

    @property
    def image_ids(self) -> list[str]:
        out = []
        start = 0
        for name, size in zip(self.shard_names, self.shard_sizes, strict=True):
            out += [f"{name}/{m}" for m in self.members[start : start + size]]
            start += size
        return out

    def images(self) -> Iterator[Image.Image]:
        """The images as PIL images in their stored mode (greyscale, palette, RGBA, RGB), one
        at a time, in row order (second pass).

        Raises
        ------
        InputError
            An image that cannot be decoded (naming the shard and the sample key), or a shard
            that changed or broke since :func:`read_webdataset` read it.
        """
        start = 0
        for path, size in zip(self.shards, self.shard_sizes, strict=True):
            yield from self._shard_images(path, start, size)
            start += size

    def _shard_images(self, path: Path, start: int, size: int) -> Iterator[Image.Image]:
        source = os.fspath(path)
        wanted = self.members[start : start + size]
        keys = self.keys[start : start + size]
        done = 0
        tar, _ = _open_tar(path)
        try:
            for _, _, info in _members(tar, source):
                if done == size:
                    break
                if info.name != wanted[done]:
                    continue
                data = tar.extractfile(info).read()
                yield _decode(data, keys[done], info.name, source)
                done += 1
        except _TAR_ERRORS as e:
            raise InputError(f"truncated or damaged tar ({e})", source) from None
        finally:
            tar.close()
        if done < size:
            raise InputError(
                f"image {wanted[done]} is gone: the shard changed while it was read", source
            )


def _decode(data: bytes, key: str, member: str, source: str) -> Image.Image:
    try:
        with Image.open(BytesIO(data)) as im:
            # as stored, as encoders.load_image(path, None) reads a file: each encoder converts
            # at its own step (hf puts a transparent image on white, open_clip resizes first)
            return im.copy()
    except _IMAGE_ERRORS as e:
        raise InputError(f"sample {key!r}: cannot read image {member} ({e})", source) from None


def read_webdataset(
    sources: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    txt_captions: str = "lines",
    progress: bool = False,
) -> WebDatasetIndex:
    """Index webdataset shards: one pass over each for its keys, captions and labels.

    Parameters
    ----------
    sources : path, pattern or sequence of them
        Tar shards, folders of shards or brace patterns (see :func:`find_shards`).
    txt_captions : {"lines", "file"}
        How a ``.txt`` holds captions: one per non-empty line (CLIP_benchmark's multi-caption
        retrieval sets; the default) or the whole file as one caption.
    progress : bool
        A progress bar over the shards (on stderr, while they are read).

    Returns
    -------
    WebDatasetIndex

    Raises
    ------
    InputError
        One line naming the shard (and the sample key): a missing shard, an empty or
        truncated tar, a sample without an image or a caption, an unreadable label.
    """
    if txt_captions not in TXT_CAPTIONS:
        raise InputError(f"txt_captions must be 'lines' or 'file', not {txt_captions!r}")
    shards = find_shards(sources)
    sizes: list[int] = []
    members: list[str] = []
    keys: list[str] = []
    captions: list[str] = []
    text_to_image: list[int] = []
    labels: list[int | None] = []
    json_fields: list[dict | None] = []
    reading = progress_bar("reading shards", len(shards), enabled=progress and len(shards) > 1)
    with reading as bar:
        for path in shards:
            source = os.fspath(path)
            before = len(members)
            for sample in _samples(path):
                member = _image_member(sample, source)
                texts = _captions(sample, txt_captions, source)
                labels.append(_label(sample, source))
                json_fields.append(_json_fields(sample, source))
                text_to_image += [len(members)] * len(texts)
                captions += texts
                members.append(member)
                keys.append(sample.key)
            sizes.append(len(members) - before)
            bar.advance()
    return WebDatasetIndex(
        shards,
        shard_names(shards),
        sizes,
        members,
        keys,
        captions,
        np.asarray(text_to_image, dtype=np.int64),
        _all_or_none(labels, keys, shards, sizes),
        json_fields if any(f is not None for f in json_fields) else None,
    )


def _all_or_none(labels, keys, shards, sizes) -> np.ndarray | None:
    """The labels as one array when every sample has one; None when none has."""
    missing = [i for i, label in enumerate(labels) if label is None]
    if len(missing) == len(labels):
        return None
    if missing:
        i = missing[0]
        shard = shards[int(np.searchsorted(np.cumsum(sizes), i, side="right"))]
        raise InputError(
            f"sample {keys[i]!r} has no .cls label but other samples have one", os.fspath(shard)
        )
    return np.asarray(labels, dtype=np.int64)
