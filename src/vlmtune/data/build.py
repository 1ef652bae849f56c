"""``vlmtune data build``: any accepted source -> validated train/test ``DatasetDict`` on disk (and hub).

Caption folders and metadata tables are checked in full first (``check``) and then built by the
same code as ``build_dataset``; saved datasets, image folders and hub names go through ``datasets``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from vlmtune.data import sources
from vlmtune.data.captions import read_table
from vlmtune.data.check import INDEX_FILES, CheckOptions, Report, check_folder, find_index
from vlmtune.data.dataset import dataset_from_table
from vlmtune.data.images import first_line
from vlmtune.data.schema import TEST
from vlmtune.errors import VlmtuneError
from vlmtune.hub import unreachable_reason

SAVED_MARKERS = ("dataset_dict.json", "state.json")


class CheckFailed(VlmtuneError):
    """Validation found errors; ``report`` lists them all (the CLI prints it as a table)."""

    def __init__(self, report: Report):
        super().__init__(
            f"{report.index}: {len(report.errors)} error(s) listed above; fix them and run build again"
        )
        self.report = report


@dataclass(frozen=True)
class BuildOptions:
    check: CheckOptions = CheckOptions()  # also carries columns, prompt and test ratio
    overwrite: bool = False
    push_to_hub: str | None = None
    private: bool = False


def detect(source: str) -> tuple[str, Path | str]:
    """(kind, where): 'table' (index file), 'saved', 'imagefolder' or 'hub'."""
    path = Path(source).expanduser()
    if path.is_file():
        return "table", find_index(path)
    if path.is_dir():
        index = next((path / n for n in INDEX_FILES if (path / n).is_file()), None)
        if index:
            return "table", index
        if any((path / m).is_file() for m in SAVED_MARKERS):
            return "saved", path
        return "imagefolder", path
    if sources.HUB_NAME.match(source):
        return "hub", source
    raise VlmtuneError(f"{source}: no such file or folder")


def build(source: str, out: Path, options: BuildOptions = BuildOptions()):
    """Returns ``(DatasetDict, check report or None)``; raises ``CheckFailed`` on validation errors."""
    out = Path(out).expanduser()
    _check_out(out, detect(str(source))[1], options.overwrite)
    if options.push_to_hub:
        _check_push(options.push_to_hub)
    dd, report = load_source(str(source), options.check, full_check=True)
    save(dd, out)
    if options.push_to_hub:
        push(dd, options.push_to_hub, options.private)
    return dd, report


def load_source(source: str, check: CheckOptions, full_check: bool = False):
    """Any supported source as a canonical train/test DatasetDict, and the check report if run.

    ``full_check`` runs every folder check (perceptual hashes, leakage...); without it a caption
    folder still gets the per-row validation (missing files, empty captions, paths escaping it).
    """
    kind, where = detect(str(source))
    if kind != "table":
        return _from_datasets(kind, where, check, str(source)), None
    report = None
    if full_check:
        report = check_folder(where, check)
        if report.errors:
            raise CheckFailed(report)
    return _from_table(where, check), report


def load_eval_set(source: str, check: CheckOptions):
    """Every row of ``source`` as one Dataset, whatever its splits: a set the model is only scored on."""
    from datasets import concatenate_datasets

    kind, where = detect(str(source))
    if kind == "table":
        return _from_table(where, check, every_row_test=True)[TEST]
    return concatenate_datasets(list(_from_datasets(kind, where, check, str(source)).values()))


def _from_table(index: Path, check: CheckOptions, every_row_test: bool = False):
    table = read_table(index)
    cols = check.columns.resolve(table.header, str(table.path))
    return dataset_from_table(table, replace(cols, label=None), check.prompt, check.test_ratio, every_row_test)


def _from_datasets(kind: str, where, check: CheckOptions, label: str):
    loaders = {"saved": sources.load_saved, "imagefolder": sources.load_imagefolder, "hub": sources.load_hub}
    dd = loaders[kind](where)
    if kind == "imagefolder" and all(ds.column_names == ["image"] for ds in dd.values()):
        raise VlmtuneError(f"{where}: pictures without captions; run 'vlmtune data template {where}' and fill them in")
    # Splits first: an extra split (e.g. unlabelled) need not have the caption column.
    return sources.canonical(sources.train_test(dd, check.test_ratio, label), check.columns, check.prompt)


def _check_out(out: Path, source, overwrite: bool) -> None:
    folder = source if not isinstance(source, Path) or source.is_dir() else source.parent
    if isinstance(folder, Path) and out.resolve() == folder.resolve():
        raise VlmtuneError(f"{out}: the output must be a new folder, not the source")
    if out.exists() and not out.is_dir():
        raise VlmtuneError(f"{out}: exists and is not a folder; choose a new output folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise VlmtuneError(
                f"{out}: already exists; pass --overwrite to replace a dataset built before, or choose a new folder"
            )
        if not (out / SAVED_MARKERS[0]).is_file():
            raise VlmtuneError(f"{out}: not a dataset built by vlmtune; refusing to replace it, choose a new folder")


def _check_push(repo: str) -> None:
    from huggingface_hub import get_token

    if not get_token():
        raise VlmtuneError(f"--push-to-hub {repo}: no Hugging Face token; run 'hf auth login' or set HF_TOKEN")
    reason = unreachable_reason()
    if reason:
        raise VlmtuneError(f"--push-to-hub {repo}: {reason}; build without it now and push later")


def save(dd, out: Path) -> None:
    """Write next to ``out`` first, so a failed save never leaves half a dataset (or none) behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = out.with_name(f".{out.name}.building"), out.with_name(f".{out.name}.old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)  # only our own names from an interrupted run
    dd.save_to_disk(str(tmp))  # embeds the image bytes: the result does not need the source folder
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def push(dd, repo: str, private: bool) -> None:
    try:
        dd.push_to_hub(repo, private=private)
    except Exception as err:
        raise VlmtuneError(f"--push-to-hub {repo}: {first_line(err)} (the dataset is saved locally)") from None
