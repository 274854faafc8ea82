"""Caption files: which image each caption describes (CSV or JSON lines).

CSV: a header row naming an image column (``image``, ``image_path``, ``file``, ``filename`` or
``path``) and a caption column (``caption``, ``text`` or ``title``), and optionally a ``url``
column (kept per image, as clip-retrieval keeps it). JSON lines: one object per line with the
same keys. Image paths are relative to the images folder (or absolute). An image
may have several captions.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["CaptionFile", "read_caption_file"]

IMAGE_KEYS = ("image", "image_path", "file", "filename", "path")
CAPTION_KEYS = ("caption", "text", "title")


class CaptionFile:
    """The parsed file: unique images (in order of first mention) and one row per caption."""

    def __init__(self, image_paths, image_ids, captions, text_to_image, urls=None):
        self.image_paths: list[Path] = image_paths
        self.image_ids: list[str] = image_ids
        self.captions: list[str] = captions
        self.text_to_image: np.ndarray = text_to_image
        #: the ``url`` of each image (its first row's) when the file has that column, else None
        self.urls: list[str | None] | None = urls


def _pick(keys, wanted: tuple[str, ...], what: str, source: str) -> str:
    lower = {k.strip().lower(): k for k in keys if k is not None}
    for name in wanted:
        if name in lower:
            return lower[name]
    found = ", ".join(lower) or "none"
    raise InputError(
        f"no {what} column (expected one of {', '.join(wanted)}; found {found})", source
    )


#: the longest CSV field read (characters): far above any caption a tokenizer keeps (they
#: truncate at a few hundred tokens), low enough that a file with a lost quote fails fast
MAX_FIELD = 1 << 24


def _not_utf8(path: Path) -> InputError:
    """The first byte of ``path`` that is not UTF-8, located by line and byte offset (UTF-8
    never puts a newline byte inside a character, so lines can be checked one by one)."""
    with path.open("rb") as f:
        if f.read(2) in (b"\xff\xfe", b"\xfe\xff"):
            return InputError(
                "UTF-16 text; save the file as UTF-8 (e.g. iconv -f utf-16 -t utf-8)", str(path)
            )
    offset = 0
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return InputError(
                    f"line {lineno} (byte {offset + e.start}): not UTF-8 text (byte "
                    f"0x{line[e.start]:02x}); save the file as UTF-8 (e.g. iconv -f latin1 "
                    "-t utf-8)",
                    str(path),
                )
            offset += len(line)
    return InputError("not UTF-8 text; save the file as UTF-8", str(path))


@contextlib.contextmanager
def _field_limit(limit: int) -> Iterator[None]:
    """The csv module's field size limit, raised to ``limit`` inside the block (it is
    process-wide, so it is put back after)."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, limit))
    try:
        yield
    finally:
        csv.field_size_limit(old)


#: a caption file's column kept per image in the metadata, as clip-retrieval keeps it
URL_KEY = "url"


def _url_key(keys) -> str | None:
    return next((k for k in keys if k is not None and k.strip().lower() == URL_KEY), None)


def _rows(path: Path) -> list[tuple[int, str, str, str | None]]:
    try:
        return _read_rows(path)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def _read_rows(path: Path) -> list[tuple[int, str, str, str | None]]:
    """``(line, image, caption, url)`` per row; ``url`` is None where the row has none."""
    source = str(path)
    rows: list[tuple[int, str, str, str | None]] = []
    # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column's name
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        with path.open(encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"line {lineno}: not JSON ({e.msg})", source) from None
                if not isinstance(obj, dict):
                    raise InputError(f"line {lineno}: expected a JSON object", source)
                image_key = _pick(obj, IMAGE_KEYS, "image", f"{source}: line {lineno}")
                caption_key = _pick(obj, CAPTION_KEYS, "caption", f"{source}: line {lineno}")
                url = obj.get(_url_key(obj) or URL_KEY)
                rows.append((lineno, str(obj[image_key]), str(obj[caption_key]), _url_text(url)))
        return rows
    if path.suffix.lower() not in (".csv", ".tsv"):
        raise InputError("captions must be a .csv, .tsv or .jsonl file", source)
    with path.open(encoding="utf-8-sig", newline="") as f, _field_limit(MAX_FIELD):
        reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        try:
            if reader.fieldnames is None:
                raise InputError("empty captions file", source)
            image_key = _pick(reader.fieldnames, IMAGE_KEYS, "image", source)
            caption_key = _pick(reader.fieldnames, CAPTION_KEYS, "caption", source)
            url_key = _url_key(reader.fieldnames)
            for lineno, row in enumerate(reader, 2):
                image, caption = row.get(image_key), row.get(caption_key)
                if image is None or caption is None:
                    raise InputError(f"line {lineno}: missing fields", source)
                url = _url_text(row.get(url_key)) if url_key is not None else None
                rows.append((lineno, image, caption, url))
        except csv.Error as e:
            hint = " (an unclosed quote?)" if "field larger" in str(e) else ""
            # line_num counts the lines read whole; the bad one is the next
            raise InputError(
                f"line {reader.line_num + 1}: not a readable CSV ({e}){hint}", source
            ) from None
    return rows


def _url_text(value) -> str | None:
    """A url cell as text; an empty or missing one is None (a null in the metadata)."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def read_caption_file(path: str | os.PathLike, images_dir: str | os.PathLike) -> CaptionFile:
    """Parse a caption file and check that every image it names exists under ``images_dir``."""
    path, images_dir = Path(path), Path(images_dir)
    source = str(path)
    if not path.is_file():
        raise InputError("captions file not found", source)
    if not images_dir.is_dir():
        raise InputError("images folder not found", str(images_dir))
    index: dict[str, int] = {}
    image_paths: list[Path] = []
    captions: list[str] = []
    text_to_image: list[int] = []
    urls: list[str | None] = []
    for lineno, image, caption, url in _rows(path):
        image, caption = image.strip(), caption.strip()
        if not image:
            raise InputError(f"line {lineno}: empty image name", source)
        if not caption:
            raise InputError(f"line {lineno}: empty caption", source)
        if image not in index:
            file = Path(image) if Path(image).is_absolute() else images_dir / image
            if not file.is_file():
                raise InputError(
                    f"line {lineno}: image {image!r} not found in {images_dir}", source
                )
            index[image] = len(image_paths)
            image_paths.append(file)
            urls.append(url)
        captions.append(caption)
        text_to_image.append(index[image])
    if not captions:
        raise InputError("no captions in file", source)
    return CaptionFile(
        image_paths,
        list(index),
        captions,
        np.asarray(text_to_image, dtype=np.int64),
        urls if any(u is not None for u in urls) else None,
    )
