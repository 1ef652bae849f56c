"""``vlmtune data convert``: every picture below SRC into an upright RGB JPEG in DST.

Output names are ``PREFIX + original stem + .jpg`` in the same sub-folder as the source (NFC
Unicode), so a user can find each photo again; stems that collide (``a.heic`` and ``a.png``) get
``-2``, ``-3`` in sorted order. SRC is only read. DST files are only ever created, never replaced:
an existing identical file counts as done, a different one is a conflict (refused, or the next
free ``-cN`` name with ``--on-conflict suffix``). A manifest in DST remembers what was converted from
what, so a re-run only stats files. A picture whose shorter side is below ``min_side`` (the
embedded model's input, as ``data check`` uses) is converted with a warning: it will be upscaled.
"""

from __future__ import annotations

import io
import json
import os
import unicodedata
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image

from vlmtune.data.check import DEFAULT_MIN_SIDE
from vlmtune.data.images import DEFAULT_MAX_PIXELS, UnusableImage, first_line, render_jpeg
from vlmtune.data.pool import DEFAULT_WORKERS, map_files
from vlmtune.errors import VlmtuneError

MANIFEST = ".vlmtune-convert.json"
CONVERTED, UNCHANGED, NOT_IMAGE, FAILED = "converted", "unchanged", "not_image", "failed"
MAX_SUFFIX = 1000


@dataclass(frozen=True)
class ConvertOptions:
    prefix: str = ""
    quality: int = 95
    max_side: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    keep_gps: bool = False
    on_conflict: str = "refuse"  # or "suffix"
    min_side: int = DEFAULT_MIN_SIDE  # warn below it; not part of key(): it never changes the output

    def key(self) -> str:
        """What decides the output bytes and name; a manifest entry only counts for the same key."""
        return f"{self.prefix}|q{self.quality}|s{self.max_side}|gps{int(self.keep_gps)}"


@dataclass(frozen=True)
class Job:
    source: Path
    label: str  # source path relative to SRC, for messages
    target: Path
    options: ConvertOptions


@dataclass(frozen=True)
class Outcome:
    source: str
    status: str
    target: Path | None = None
    reason: str = ""
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def usable(self) -> int:
        return self.count(CONVERTED) + self.count(UNCHANGED)

    def line(self) -> str:
        counts = Counter(o.status for o in self.outcomes)
        skipped = counts[UNCHANGED] + counts[NOT_IMAGE]
        return (
            f"converted {counts[CONVERTED]}, skipped {skipped} ({counts[UNCHANGED]} already done, "
            f"{counts[NOT_IMAGE]} not images), failed {counts[FAILED]}"
        )


class Manifest:
    """``DST/.vlmtune-convert.json``: source+options -> output, with sizes and mtimes of both."""

    def __init__(self, dst: Path):
        self.path = dst / MANIFEST
        self.dst = dst
        try:
            self.entries: dict[str, dict] = json.loads(self.path.read_text(encoding="utf-8"))["entries"]
        except (OSError, ValueError, KeyError, TypeError):  # absent or damaged: fall back to byte comparison
            self.entries = {}
        self.changed = False

    @staticmethod
    def _key(source: Path, options: ConvertOptions) -> str:
        return f"{source}|{options.key()}"

    def target(self, source: Path, options: ConvertOptions) -> Path | None:
        entry = self.entries.get(self._key(source, options))
        return self.dst / entry["target"] if entry else None

    def is_fresh(self, source: Path, options: ConvertOptions) -> bool:
        entry = self.entries.get(self._key(source, options))
        if not entry:
            return False
        return _stamp(source) == entry["source"] and _stamp(self.dst / entry["target"]) == entry["output"]

    def record(self, source: Path, options: ConvertOptions, target: Path) -> None:
        entry = {"target": target.relative_to(self.dst).as_posix(), "source": _stamp(source), "output": _stamp(target)}
        key = self._key(source, options)
        self.changed |= self.entries.get(key) != entry
        self.entries[key] = entry

    def save(self) -> None:
        if not self.changed:
            return  # a re-run with nothing new leaves DST exactly as it was
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"version": 1, "entries": self.entries}, indent=1), encoding="utf-8")
        os.replace(tmp, self.path)


def _stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def convert_folder(
    src: Path, dst: Path, options: ConvertOptions, workers: int = DEFAULT_WORKERS, progress: bool = True
) -> Summary:
    src, dst = _check_folders(Path(src), Path(dst))
    manifest = Manifest(dst)
    done, todo = [], []
    for path in list_sources(src):
        if manifest.is_fresh(path, options):
            done.append(Outcome(_label(path, src), UNCHANGED, manifest.target(path, options), "already converted"))
        else:
            todo.append(path)
    jobs = plan_jobs(src, dst, todo, options, manifest)
    outcomes = map_files(convert_one, jobs, workers, "converting", progress)
    for job, outcome in zip(jobs, outcomes):
        if outcome.status in (CONVERTED, UNCHANGED):
            manifest.record(job.source, options, outcome.target)
    manifest.save()
    return Summary(sorted(done + outcomes, key=lambda o: o.source))


def _check_folders(src: Path, dst: Path) -> tuple[Path, Path]:
    if not src.is_dir():
        raise VlmtuneError(f"{src}: not a folder; pass the folder that holds your photos")
    if dst.exists() and not dst.is_dir():
        raise VlmtuneError(f"{dst}: exists and is not a folder; pass a new or existing output folder")
    src, real_dst = src.resolve(), dst.resolve()
    if real_dst == src or real_dst.is_relative_to(src) or src.is_relative_to(real_dst):
        raise VlmtuneError(f"{dst}: choose an output folder outside {src} (and not containing it); SRC is only read")
    real_dst.mkdir(parents=True, exist_ok=True)
    return src, real_dst


def list_sources(src: Path) -> list[Path]:
    """Every non-hidden file below SRC, sorted; folder links are not followed (no cycles)."""
    found = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files) if not f.startswith(".")]
    return found


def _label(path: Path, src: Path) -> str:
    return path.relative_to(src).as_posix()


def plan_jobs(src: Path, dst: Path, paths: list[Path], options: ConvertOptions, manifest: Manifest) -> list[Job]:
    """Unique target names decided here, before the workers run, so they never race for one."""
    taken = {Path(e["target"]).as_posix().casefold() for e in manifest.entries.values()}
    jobs = []
    for path in paths:
        target = manifest.target(path, options) or _free_name(src, dst, path, options.prefix, taken)
        jobs.append(Job(path, _label(path, src), target, options))
    return jobs


def _free_name(src: Path, dst: Path, path: Path, prefix: str, taken: set[str]) -> Path:
    rel_dir = path.parent.relative_to(src)
    stem = unicodedata.normalize("NFC", prefix + path.stem)
    for n in range(1, MAX_SUFFIX):
        rel = Path(unicodedata.normalize("NFC", rel_dir.as_posix())) / f"{stem}{'' if n == 1 else f'-{n}'}.jpg"
        # casefold: two names that differ only in case are one file on macOS and Windows
        if rel.as_posix().casefold() not in taken:
            taken.add(rel.as_posix().casefold())
            return dst / rel
    raise VlmtuneError(f"{path}: more than {MAX_SUFFIX} files share the name stem '{path.stem}'")


def convert_one(job: Job) -> Outcome:
    """Runs in a worker: decode, encode, then create the target or compare with what is there."""
    o = job.options
    try:
        data, notes = render_jpeg(job.source, o.quality, o.max_side, o.max_pixels, o.keep_gps)
        job.target.parent.mkdir(parents=True, exist_ok=True)
        outcome = _place(job, data, tuple(notes))
        return outcome if outcome.status == FAILED else replace(outcome, warnings=size_warnings(data, o.min_side))
    except UnusableImage as err:
        return Outcome(job.label, NOT_IMAGE if err.not_image else FAILED, reason=err.reason)
    except Exception as err:  # one odd file must not stop the other thousands
        return Outcome(job.label, FAILED, reason=first_line(err))


def size_warnings(jpeg: bytes, min_side: int) -> tuple[str, ...]:
    with Image.open(io.BytesIO(jpeg)) as im:  # the header only
        width, height = im.size
    if min(width, height) >= min_side:
        return ()
    return (f"{width}x{height} is smaller than {min_side} px (--min-side); the model will upscale it",)  # as data check says


def _place(job: Job, data: bytes, notes: tuple[str, ...]) -> Outcome:
    candidates = [job.target]
    if job.options.on_conflict == "suffix":
        candidates += [job.target.with_name(f"{job.target.stem}-c{n}.jpg") for n in range(1, MAX_SUFFIX)]
    for target in candidates:
        if create_new(target, data):
            return Outcome(job.label, CONVERTED, target, notes=notes)
        if target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data:
            return Outcome(job.label, UNCHANGED, target, "identical output already exists", notes)
    name = job.target.name
    if job.options.on_conflict == "suffix":
        return Outcome(job.label, FAILED, reason=f"no free name left next to {name}")
    return Outcome(
        job.label,
        FAILED,
        reason=f"{name} already exists in the output with different content; delete it to reconvert, "
        "or pass --on-conflict suffix",
    )


def create_new(path: Path, data: bytes) -> bool:
    """Write ``path`` only if it does not exist (atomic on filesystems with hard links)."""
    if path.exists() or path.is_symlink():
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)  # fails instead of replacing: a complete file or nothing
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links (FAT/exFAT cards): exclusive create instead
        try:
            with open(path, "xb") as f:
                f.write(data)
            return True
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
