"""``image/jpeg``, ``image/png``, ``application/x-image``: images to uint8 (N, H, W, C) arrays.

Two entry points: ``read`` decodes one image (an inference request body), and ``read_image_channel``
loads a training channel the way SageMaker's Image Classification "lst" format describes it: a
``.lst`` file of ``index<TAB>label[<TAB>label...]<TAB>relative/path`` lines next to the images.
Parameters: ``channels`` 3 (RGB, default) or 1 (grayscale); ``resize`` (H, W), or "HxW"/"H,W".
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from raymaker.io.batch import Batch, DataFormatError, Source, read_all

CONTENT_TYPES: tuple[str, ...] = ("image/jpeg", "image/png", "application/x-image")

_MODES = {1: "L", 3: "RGB"}


def read(source: Source, **params: Any) -> Batch:
    """One encoded image as a Batch with features of shape (1, H, W, C) and no labels."""
    channels, resize = _options(params)
    data, name = read_all(source)
    return Batch(decode(data, name=name, channels=channels, resize=resize)[np.newaxis], None)


def iter_batches(source: Source, **params: Any) -> Iterator[Batch]:
    """An image request is a single image: one Batch."""
    yield read(source, **params)


def decode(
    data: bytes | memoryview,
    *,
    name: str = "<bytes>",
    channels: int = 3,
    resize: tuple[int, int] | None = None,
) -> np.ndarray:
    """Decode JPEG/PNG/... bytes to a uint8 (H, W, C) array, converting to RGB or grayscale."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decode now, so a truncated file fails here and not later
            img = img.convert(_MODES[channels])
            if resize is not None and img.size != (resize[1], resize[0]):
                img = img.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)  # PIL sizes are (W, H)
            arr = np.array(img, dtype=np.uint8)  # a writable copy
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise DataFormatError(f"not a readable image ({exc})", source=name) from None
    return arr.reshape(arr.shape[0], arr.shape[1], channels)


def read_lst(lst_source: Source) -> list[tuple[int, tuple[float, ...], str]]:
    """Parse a SageMaker/MXNet ``.lst`` file into ``(index, labels, relative_path)`` tuples, in file
    order. Fields are tab-separated so paths may contain spaces; blank lines are skipped."""
    data, name = read_all(lst_source)
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"not UTF-8 text ({exc.reason})", source=name) from None
    entries: list[tuple[int, tuple[float, ...], str]] = []
    n_labels = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        fields = line.rstrip("\r").split("\t")
        if len(fields) < 3:
            raise DataFormatError(
                f"expected 'index<TAB>label<TAB>relative/path', got {line!r} (fields must be tab-separated)",
                source=name,
                where=where,
            )
        try:
            index = int(fields[0])
            labels = tuple(float(x) for x in fields[1:-1])
        except ValueError:
            raise DataFormatError(
                f"index must be an integer and labels numbers, got {line!r}", source=name, where=where
            ) from None
        if n_labels is None:
            n_labels = len(labels)
        elif len(labels) != n_labels:
            raise DataFormatError(
                f"{len(labels)} labels, but the first entry has {n_labels}", source=name, where=where
            )
        entries.append((index, labels, fields[-1]))
    return entries


def read_image_channel(
    directory: str | os.PathLike,
    lst_path: str | os.PathLike | None = None,
    resize: tuple[int, int] | str | None = None,
    channels: int | str = 3,
) -> Batch:
    """All images a ``.lst`` file lists, relative to ``directory``, as one Batch: uint8 features
    (N, H, W, C) and float32 labels, (N,) or (N, k) for k labels per image.

    ``lst_path`` defaults to the one ``.lst`` file in ``directory``. Without ``resize`` every image must
    have the size of the first.
    """
    channels, resize = _options({"channels": channels, "resize": resize})
    directory = os.fspath(directory)
    if lst_path is None:
        lst_path = _find_lst(directory)
    lst_path = os.fspath(lst_path)
    entries = read_lst(lst_path)
    if not entries:
        shape = (0, *(resize or (0, 0)), channels)
        return Batch(np.empty(shape, dtype=np.uint8), np.empty(0, dtype=np.float32))
    labels = np.array([e[1] for e in entries], dtype=np.float32)
    if labels.shape[1] == 1:
        labels = labels[:, 0]
    features: np.ndarray | None = None
    first = ""
    for i, (_, _, rel) in enumerate(entries):
        path = os.path.join(directory, rel)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise DataFormatError(
                f"cannot read {path} listed in it ({exc.strerror})", source=lst_path
            ) from None
        img = decode(data, name=path, channels=channels, resize=resize)
        if features is None:
            # Preallocate once the size is known, rather than stacking a list of arrays.
            features = np.empty((len(entries), *img.shape), dtype=np.uint8)
            first = path
        elif img.shape != features.shape[1:]:
            raise DataFormatError(
                f"image is {img.shape[0]}x{img.shape[1]} (HxW) but {first} is "
                f"{features.shape[1]}x{features.shape[2]}; pass resize=(H, W) to load images of different sizes",
                source=path,
            )
        features[i] = img
    return Batch(features, labels)


# --- internals ------------------------------------------------------------------------------------


def _options(params: dict[str, Any]) -> tuple[int, tuple[int, int] | None]:
    params = dict(params)
    raw_channels = params.pop("channels", 3)
    raw_resize = params.pop("resize", None)
    if params:
        raise ValueError(
            f"unsupported image parameter(s): {', '.join(sorted(params))}; supported: channels, resize"
        )
    try:
        channels = int(raw_channels)
    except (TypeError, ValueError):
        channels = 0
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {raw_channels!r}")
    return channels, _resize(raw_resize)


def _resize(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    parts = re.split(r"[x,]", value) if isinstance(value, str) else list(value)
    try:
        height, width = (int(p) for p in parts)
    except (TypeError, ValueError):
        height = width = 0
    if height <= 0 or width <= 0:
        raise ValueError(f"resize must be (height, width) or 'HxW' with positive sizes, got {value!r}")
    return height, width


def _find_lst(directory: str) -> str:
    try:
        found = sorted(f for f in os.listdir(directory) if f.endswith(".lst"))
    except OSError as exc:
        raise DataFormatError(f"cannot list the image directory ({exc.strerror})", source=directory) from None
    if len(found) != 1:
        what = "no .lst file" if not found else f"several .lst files ({', '.join(found)})"
        raise DataFormatError(f"{what}; pass lst_path", source=directory)
    return os.path.join(directory, found[0])
