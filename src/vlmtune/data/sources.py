"""Sources other than an index table: a dataset saved to disk, an HF ``imagefolder``, a hub name.

Loading is ``datasets``' job; here the columns are mapped onto (image, prompt, answer, extras) and
the splits onto train/test (+ validation). The hub is probed with a short timeout so offline use fails at once.
"""

from __future__ import annotations

import re
from pathlib import Path

from vlmtune.data.captions import CAPTION_ALIASES, LABEL_ALIASES, Columns
from vlmtune.data.images import first_line, register_plugins
from vlmtune.data.schema import ANSWER, CANONICAL_COLUMNS, IMAGE, PROMPT, TEST, TRAIN, VALIDATION
from vlmtune.errors import VlmtuneError
from vlmtune.hub import PROBE_SECONDS, hub_offline

HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
VALIDATION_NAMES = ("validation", "valid", "val", "dev")


def load_saved(path: Path):
    from datasets import DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except Exception as err:
        raise VlmtuneError(f"{path}: not a loadable saved dataset ({first_line(err)})") from None
    return loaded if isinstance(loaded, DatasetDict) else DatasetDict({TRAIN: loaded})


def load_imagefolder(path: Path):
    from datasets import load_dataset

    register_plugins()
    try:
        return load_dataset("imagefolder", data_dir=str(path))
    except Exception as err:
        raise VlmtuneError(
            f"{path}: not an image folder datasets can load ({first_line(err)}); "
            "add captions.csv with 'vlmtune data template'"
        ) from None


def load_hub(name: str):
    from datasets import load_dataset
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if not hub_offline():
        try:
            HfApi().dataset_info(name, timeout=PROBE_SECONDS)
        except (RepositoryNotFoundError, GatedRepoError):
            raise VlmtuneError(f"{name}: no such local path, and no public dataset of that name on the hub") from None
        except Exception as err:
            reason = f"the hub is unreachable ({first_line(err)})"
            raise VlmtuneError(f"{name}: no such local path, and {reason}; check the path or the network") from None
    try:
        return load_dataset(name)
    except Exception as err:
        hint = " (HF_HUB_OFFLINE is set and it is not cached)" if hub_offline() else ""
        raise VlmtuneError(f"{name}: could not load it from the hub{hint}: {first_line(err)}") from None


def canonical(dd, columns: Columns, prompt: str):
    """Every split as (image, prompt, answer, extras), with ``image`` an ``Image`` feature."""
    from datasets import DatasetDict

    return DatasetDict({name: _canonical_split(ds, columns, prompt, name) for name, ds in dd.items()})


def _canonical_split(ds, columns: Columns, prompt: str, split: str):
    from datasets import Image

    where = f"split '{split}'"
    features = ds.features
    image_default = next((k for k, f in features.items() if isinstance(f, Image)), IMAGE)
    cols = columns.resolve(list(features), where, image_default, CAPTION_ALIASES + LABEL_ALIASES[:1])
    ds = _as_text(_as_images(ds, cols.image, where), cols.caption, where)
    extras = [k for k in features if k not in (cols.image, cols.caption, cols.prompt)]
    clash = [k for k in extras if k in CANONICAL_COLUMNS]
    if clash:
        raise VlmtuneError(f"{where}: column '{clash[0]}' clashes with the built dataset's own; rename it")
    targets = {cols.image: IMAGE, cols.caption: ANSWER, cols.prompt: PROMPT}
    ds = ds.rename_columns({old: new for old, new in targets.items() if old and old != new})
    if cols.prompt is None:
        ds = ds.add_column(PROMPT, [prompt] * len(ds))
    empty = [i for i, a in enumerate(ds[ANSWER]) if not (a or "").strip()]
    if empty:
        raise VlmtuneError(f"{where}: {len(empty)} row(s) with an empty caption (first: row {empty[0]})")
    return ds.select_columns([*CANONICAL_COLUMNS, *extras])


def _as_images(ds, column: str, where: str):
    from datasets import Image, Value

    feature = ds.features[column]
    if isinstance(feature, Image):
        return ds
    if feature != Value("string"):
        raise VlmtuneError(f"{where}: column '{column}' holds {feature}, not images or paths")
    return ds.cast_column(column, Image())


def _as_text(ds, column: str, where: str):
    from datasets import ClassLabel, Value

    feature = ds.features[column]
    if isinstance(feature, ClassLabel):
        names = [feature.int2str(i) for i in ds[column]]  # a cast would give "0", "1"
        return ds.remove_columns(column).add_column(column, names)
    if feature != Value("string"):
        raise VlmtuneError(f"{where}: caption column '{column}' holds {feature}, not one text per row")
    return ds


def train_test(dd, test_ratio: float, where: str):
    """Train and test, plus validation when the data has both a test and a validation split.

    A validation split stands in for a missing test (the held-out set is what the report needs);
    without either, a test split is cut off train.
    """
    from datasets import DatasetDict

    names = list(dd)
    train = dd[TRAIN] if TRAIN in dd else (dd[names[0]] if len(names) == 1 else None)
    if train is None:
        raise VlmtuneError(f"{where}: no 'train' split among {', '.join(names)}")
    test_name = next((n for n in (TEST, *VALIDATION_NAMES) if n in dd), None)
    test = dd[test_name] if test_name else None
    validation = next((dd[n] for n in VALIDATION_NAMES if n in dd and n != test_name), None)
    if test is None:
        if not 0 < test_ratio < 1:
            raise VlmtuneError(f"{where}: no test split; pass --test-ratio between 0 and 1 to cut one off")
        try:
            parts = train.train_test_split(test_size=test_ratio, seed=0)  # fixed seed: the same split every build
        except ValueError as err:
            raise VlmtuneError(f"{where}: cannot cut a test split ({first_line(err)})") from None
        train, test = parts[TRAIN], parts[TEST]
    for name, part in ((TRAIN, train), (TEST, test)):
        if len(part) == 0:
            raise VlmtuneError(f"{where}: the {name} split is empty")
    kept = {TRAIN: train, TEST: test}
    if validation is not None and len(validation):
        kept[VALIDATION] = validation
    return DatasetDict(kept)
