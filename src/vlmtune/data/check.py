"""``vlmtune data check``: every problem of a caption folder at once, as errors and warnings.

Errors stop ``build`` (the row cannot be trained on); warnings are worth a look (duplicates,
train/test leakage, odd caption lengths, class balance, tiny pictures).
"""

from __future__ import annotations

import statistics
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path

from vlmtune.data.captions import Columns, Table, read_table
from vlmtune.data.dataset import Row, empty_split_hint, row_errors, table_rows
from vlmtune.data.images import DEFAULT_MAX_PIXELS, NON_PORTABLE_FORMATS, list_images, model_rgb
from vlmtune.data.inspect import ImageInfo, inspect_image
from vlmtune.data.phash import DEFAULT_MAX_DISTANCE, mean_colour, near_groups, phash
from vlmtune.data.pool import DEFAULT_WORKERS, map_files
from vlmtune.data.schema import CAPTIONS_FILE, DEFAULT_PROMPT, IMAGE, TEST, TRAIN
from vlmtune.errors import VlmtuneError

ERROR, WARNING = "error", "warning"
INDEX_FILES = (CAPTIONS_FILE, "metadata.jsonl", "metadata.csv")
# The embedded default model's input side (224 px, models/default.py); smaller pictures get upscaled.
# The data layer cannot ask the model, so the number is repeated here and checked by a test.
DEFAULT_MIN_SIDE = 224
LENGTH_FACTOR = 4  # a caption 4x longer or shorter than the median is probably a slip
MIN_ROWS_FOR_LENGTHS = 5
IMBALANCE = 10  # largest class / smallest class


@dataclass(frozen=True)
class Issue:
    level: str
    where: str
    message: str


@dataclass
class Report:
    index: Path
    rows: int = 0
    issues: list[Issue] = field(default_factory=list)
    splits: Counter = field(default_factory=Counter)
    balance: dict[str, Counter] = field(default_factory=dict)  # label -> rows per split

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.level == ERROR]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.level == WARNING]

    def add(self, level: str, where: str, message: str) -> None:
        self.issues.append(Issue(level, where, message))


@dataclass(frozen=True)
class CheckOptions:
    columns: Columns = Columns()
    prompt: str = DEFAULT_PROMPT
    test_ratio: float = 0.2
    min_side: int = DEFAULT_MIN_SIDE
    max_distance: int = DEFAULT_MAX_DISTANCE
    max_pixels: int = DEFAULT_MAX_PIXELS
    workers: int = DEFAULT_WORKERS
    progress: bool = True


def find_index(source: Path) -> Path:
    """The index file of a folder (``captions.csv``, else HF ``metadata.jsonl``/``.csv``), or the file itself."""
    source = Path(source)
    if source.is_file():
        if source.suffix.lower() not in (".csv", ".jsonl"):
            raise VlmtuneError(f"{source}: expected captions.csv, metadata.jsonl or metadata.csv")
        return source
    if not source.is_dir():
        raise VlmtuneError(f"{source}: no such file or folder")
    for name in INDEX_FILES:
        if (source / name).is_file():
            return source / name
    raise VlmtuneError(f"{source}: no {CAPTIONS_FILE} here; create one with 'vlmtune data template {source}'")


def check_folder(source: Path, options: CheckOptions = CheckOptions()) -> Report:
    table = read_table(find_index(source))
    cols = options.columns.resolve(table.header, str(table.path))
    rows = table_rows(table, cols, options.prompt, options.test_ratio)
    report = Report(table.path, len(rows))
    for line, message in table.problems:
        report.add(ERROR, f"{table.path.name}:{line}", message)
    _check_rows(report, table, rows, keyed_by_prompt=cols.prompt is not None)
    _check_splits(report, rows, options.test_ratio)
    _check_lengths(report, table, rows)
    if cols.label:
        _check_balance(report, rows, cols.label)
    _check_images(report, table, rows, options)
    _check_unlisted(report, table, rows)
    return report


def _check_rows(report: Report, table: Table, rows: list[Row], keyed_by_prompt: bool) -> None:
    for row in rows:
        at = f"{table.path.name}:{row.line}"
        for error in row_errors(row, table.base):
            report.add(ERROR, at, error)
        if "\n" in row.caption or "\r" in row.caption:
            report.add(WARNING, at, f"caption of '{row.file_name}' contains a line break")
    # The same picture with different questions is normal VQA data; the same question twice is not.
    seen: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        seen[(row.file_name, row.prompt if keyed_by_prompt else "")].append(row)
    for (name, _), same in seen.items():
        if len(same) > 1 and name:
            lines = ", ".join(str(r.line) for r in same)
            report.add(ERROR, f"{table.path.name}:{lines}", f"'{name}' is listed {len(same)} times; keep one row")
    _check_lookalike_names(report, table, rows)


def _check_lookalike_names(report: Report, table: Table, rows: list[Row]) -> None:
    """Names equal up to case or accent encoding are one file on macOS/Windows, two on Linux."""
    groups: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        groups[unicodedata.normalize("NFC", row.file_name).casefold()].add(row.file_name)
    for names in groups.values():
        if len(names) > 1:
            report.add(WARNING, table.path.name, f"names differ only in case or accents: {', '.join(sorted(names))}")


def _check_splits(report: Report, rows: list[Row], test_ratio: float) -> None:
    report.splits = Counter(r.split for r in rows if r.split in (TRAIN, TEST))
    for split in (TRAIN, TEST):
        if rows and not report.splits[split]:
            report.add(ERROR, report.index.name, f"no {split} rows; {empty_split_hint(split, test_ratio)}")


def _check_lengths(report: Report, table: Table, rows: list[Row]) -> None:
    captioned = [r for r in rows if r.caption]
    if len(captioned) < MIN_ROWS_FOR_LENGTHS:
        return
    median = statistics.median(len(r.caption) for r in captioned)
    for row in captioned:
        n = len(row.caption)
        if n > LENGTH_FACTOR * median or n * LENGTH_FACTOR < median:
            report.add(
                WARNING,
                f"{table.path.name}:{row.line}",
                f"caption of '{row.file_name}' is {n} characters, the median is {median:g}; complete and intended?",
            )


def _check_balance(report: Report, rows: list[Row], label: str) -> None:
    for row in rows:
        value = str(row.extras.get(label) or "").strip() or "(empty)"
        report.balance.setdefault(value, Counter())[row.split] += 1
    for value, counts in sorted(report.balance.items()):
        for split in (TRAIN, TEST):
            if not counts[split]:
                report.add(WARNING, f"{label}={value}", f"no {split} rows for this class")
    sizes = {v: sum(c.values()) for v, c in report.balance.items()}
    big, small = max(sizes, key=sizes.get), min(sizes, key=sizes.get)
    if sizes[big] >= IMBALANCE * sizes[small]:
        report.add(WARNING, label, f"imbalanced: '{big}' has {sizes[big]} rows, '{small}' only {sizes[small]}")


def _check_images(report: Report, table: Table, rows: list[Row], options: CheckOptions) -> None:
    usable = [r for r in rows if r.path is not None and r.path.is_file()]
    names = sorted({r.file_name for r in usable})
    path_of = {r.file_name: r.path for r in usable}
    inspect = partial(inspect_image, max_pixels=options.max_pixels)
    found = map_files(inspect, [path_of[n] for n in names], options.workers, "checking", options.progress)
    infos = dict(zip(names, found))
    for name, info in infos.items():
        _check_one_image(report, name, info, options.min_side)
    readable = [n for n in names if infos[n].error is None]
    splits_of: dict[str, set[str]] = defaultdict(set)
    for row in usable:
        splits_of[row.file_name].add(row.split)
    _check_duplicates(report, readable, infos, splits_of, options.max_distance)


def _check_one_image(report: Report, name: str, info: ImageInfo, min_side: int) -> None:
    if info.error:
        report.add(ERROR, name, f"unusable image: {info.error}")
        return
    if min(info.width, info.height) < min_side:
        report.add(WARNING, name, f"{info.width}x{info.height} is smaller than {min_side} px (--min-side); the model will upscale it")
    if info.format in NON_PORTABLE_FORMATS:
        report.add(WARNING, name, f"{info.format} may not load in training code; run 'vlmtune data convert' first")


def _check_duplicates(report, names: list[str], infos: dict[str, ImageInfo], splits_of, max_distance: int) -> None:
    for name in names:
        if splits_of[name] >= {TRAIN, TEST}:
            report.add(WARNING, name, "leakage: the same image is used by train and test rows")
    for group in near_groups([infos[n].phash for n in names], max_distance, [infos[n].colour for n in names]):
        members = [names[i] for i in group]
        identical = len({infos[n].sha256 for n in members}) == 1
        kind = "identical files" if identical else f"near-duplicate images (hash distance <= {max_distance})"
        splits = set().union(*(splits_of[n] for n in members))
        leak = "; leakage: they are in train and test, give them one split" if splits >= {TRAIN, TEST} else ""
        report.add(WARNING, ", ".join(members), kind + leak)


def _check_unlisted(report: Report, table: Table, rows: list[Row]) -> None:
    listed = {unicodedata.normalize("NFC", r.file_name) for r in rows}
    unlisted = [n for n in list_images(table.base) if unicodedata.normalize("NFC", n) not in listed]
    if unlisted:
        sample = ", ".join(unlisted[:3]) + (", ..." if len(unlisted) > 3 else "")
        hint = "add them with 'vlmtune data template'"
        report.add(WARNING, table.path.name, f"{len(unlisted)} image(s) not listed ({sample}); {hint}")


def render_report(report: Report, console) -> None:
    """Problems as a table (errors first), class balance if a label column exists, then a summary."""
    from rich.table import Table as RichTable

    if report.issues:
        table = RichTable(title=f"check {report.index}", show_lines=False)
        table.add_column("level")
        table.add_column("where", overflow="fold")
        table.add_column("problem", overflow="fold")
        for issue in sorted(report.issues, key=lambda i: i.level != ERROR):
            style = "red" if issue.level == ERROR else "yellow"
            table.add_row(f"[{style}]{issue.level}[/]", issue.where, issue.message)
        console.print(table)
    if report.balance:
        balance = RichTable(title="class balance")
        for name in ("class", TRAIN, TEST):
            balance.add_column(name)
        for value, counts in sorted(report.balance.items()):
            balance.add_row(value, str(counts[TRAIN]), str(counts[TEST]))
        console.print(balance)
    console.print(
        f"{report.rows} rows (train {report.splits[TRAIN]}, test {report.splits[TEST]}): "
        f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)"
    )


# ---------------------------------------------------------------- train/test lookalikes for the report
def _hashes(rows) -> tuple[list[int], list[tuple[int, int, int]], list[str]]:
    hashes, colours, names = [], [], []
    for row in rows:
        image = row[IMAGE]
        names.append(Path(getattr(image, "filename", "") or "").name)  # empty for pictures stored as bytes
        rgb = model_rgb(image)
        hashes.append(phash(rgb))
        colours.append(mean_colour(rgb))
    return hashes, colours, names


def lookalike_caveats(train, test, n_test: int, max_distance: int = DEFAULT_MAX_DISTANCE, shown: int = 5) -> list[str]:
    """Caveat lines for the first ``n_test`` test pictures that look like a train picture (the
    perceptual hash ``vlmtune data check`` uses): their scores say more about memory than about
    generalisation. Test pictures are named by their report number (#i), train ones by file name."""
    train_h, train_c, train_names = _hashes(train)
    test_h, test_c, _ = _hashes(islice(test, n_test))
    k = len(train_h)
    lines, leaked = [], set()
    for group in near_groups(train_h + test_h, max_distance, train_c + test_c):
        tests = [i - k for i in group if i >= k]
        trains = [train_names[i] or f"row {i}" for i in group if i < k]
        if tests and trains:
            leaked.update(tests)
            verb = "looks" if len(tests) == 1 else "look"
            lines.append(f"test picture {', '.join(f'#{t}' for t in tests)} {verb} like train {', '.join(trains)}")
    if not lines:
        return []
    head = (f"{len(leaked)} of {n_test} test pictures look like a train picture (perceptual hash distance <= "
            f"{max_distance}, as in 'vlmtune data check'): their scores may be inflated")
    more = [f"... and {len(lines) - shown} more such group(s)"] if len(lines) > shown else []
    return [head, *lines[:shown], *more]
