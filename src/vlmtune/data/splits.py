"""The validation split, and what ``data.json`` records about every split.

Eval loss, early stopping and the best-checkpoint choice read a *validation* split, never test:
test is the before/after report's alone. The validation split comes from the data
(``split=validation`` rows, or a validation split next to a test one) or is carved off train by a
hash of each picture's bytes: the same pictures whatever the row order, file names or folder, and
adding pictures never moves an old one across. Exact duplicates share their hash, so they land on
the same side.

The content digest of a split (sha256 over each row's picture bytes, prompt and answer) is what a
resume compares: datasets' own fingerprint of a caption folder hashes the file *paths*, so a
picture replaced under the same name would go unnoticed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from vlmtune.data.dataset import bucket
from vlmtune.data.schema import ANSWER, IMAGE, PROMPT, TRAIN, VALIDATION
from vlmtune.errors import VlmtuneError

SALT = "validation:"  # a different draw from any other hash-based split
CARVED = "carved from train by picture hash"


def image_digests(ds) -> list[str]:
    """sha256 of each row's picture bytes (read, never decoded), in row order."""
    from datasets import Image

    raw = ds.select_columns([IMAGE]).cast_column(IMAGE, Image(decode=False))
    return [hashlib.sha256(_image_bytes(v)).hexdigest() for batch in raw.iter(batch_size=64) for v in batch[IMAGE]]


def _image_bytes(value: dict) -> bytes:
    if value.get("bytes"):
        return value["bytes"]
    path = value.get("path")
    try:
        return Path(path).read_bytes()
    except (OSError, TypeError):
        raise VlmtuneError(f"{path}: picture cannot be read; check the data folder") from None


def content_digest(ds, images: list[str]) -> str:
    h = hashlib.sha256()
    for image, prompt, answer in zip(images, ds[PROMPT], ds[ANSWER]):
        h.update(f"{image}\0{prompt}\0{answer}\n".encode())
    return h.hexdigest()


def carve_indices(images: list[str], ratio: float) -> list[int]:
    """Rows for validation: hash below ``ratio``; at least one picture, never all of train."""
    if len(images) < 2 or ratio <= 0:
        return []
    buckets = [bucket(SALT + d) for d in images]
    chosen = {i for i, b in enumerate(buckets) if b < ratio}
    if not chosen:  # a small train set: the lowest hash (with its exact duplicates) still goes
        lowest = images[min(range(len(images)), key=buckets.__getitem__)]
        chosen = {i for i, d in enumerate(images) if d == lowest}
    if len(chosen) == len(images):
        chosen.discard(max(chosen, key=buckets.__getitem__))
    return sorted(chosen)


def with_validation(dd, ratio: float, wanted: bool):
    """``(DatasetDict, record)``: ``dd`` with its validation split (from the data, or carved when
    ``wanted``), and per split ``rows``, datasets' ``fingerprint`` and the ``content`` digest."""
    from datasets import DatasetDict

    splits, digests, source = carve(dd, ratio, wanted)
    return DatasetDict(splits), split_record(splits, digests, source)


def carve(dd, ratio: float, wanted: bool) -> tuple[dict, dict, dict]:
    """``(splits, picture digests per split, source per split)``: ``with_validation`` before its record."""
    digests = {name: image_digests(ds) for name, ds in dd.items()}
    splits, source = dict(dd), {VALIDATION: "data"} if VALIDATION in dd else {}
    if VALIDATION not in dd and wanted:
        picked = set(carve_indices(digests[TRAIN], ratio))
        keep = [i for i in range(len(dd[TRAIN])) if i not in picked]
        if picked:
            splits[TRAIN], splits[VALIDATION] = dd[TRAIN].select(keep), dd[TRAIN].select(sorted(picked))
            digests[VALIDATION] = [digests[TRAIN][i] for i in sorted(picked)]
            digests[TRAIN] = [digests[TRAIN][i] for i in keep]
            source[VALIDATION] = f"{CARVED} (data.validation_ratio={ratio})"
    return splits, digests, source


def split_record(splits: dict, digests: dict, source: dict) -> dict:
    """What data.json records per split; the content digest covers each row's prompt as trained."""
    return {
        name: {"rows": len(ds), "fingerprint": getattr(ds, "_fingerprint", None),
               "content": content_digest(ds, digests[name]), **({"source": source[name]} if name in source else {})}
        for name, ds in splits.items()
    }
