"""A self-describing run directory: what later stages read instead of re-asking.

    run/
      vlmtune_run.json   marker: base model, family, the training plan (LoRA pattern, modules
                         trained whole, rank), where the weights are, status
      config.yaml        the resolved config (all defaults filled in)
      versions.json      python / torch / transformers / peft ... and the device
      data.json          split sizes, fingerprints and content digests (validation included)
      adapter/           PEFT adapter + processor (or model/ for full fine-tunes)
      checkpoints/       Trainer checkpoints (resume)
      predictions/       base.jsonl, tuned.jsonl
      metrics.json       before/after summary, training time, trainable share
      report.md, report.html
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

import yaml

from vlmtune.config import RunConfig, load_config, save_config, to_dict
from vlmtune.errors import VlmtuneError
from vlmtune.paths import ADAPTER_DIR, RUN_MARKER

PACKAGES = ("vlmtune", "torch", "transformers", "peft", "accelerate", "datasets", "safetensors", "pillow", "numpy")


def versions() -> dict:
    import torch

    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["python"] = sys.version.split()[0]
    found["platform"] = platform.platform()
    found["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    return found


def write_json(path: Path, obj) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def read_json(path: Path, default=None):
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else default


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def info(self) -> dict:
        return read_json(self / RUN_MARKER, {})

    def prepare(self, cfg: RunConfig, overwrite: bool = False, resume: bool = False) -> "RunDir":
        """Create the run dir, refusing to mix two runs in one folder."""
        if self.info.get("status") == "prepared" and not resume:
            shutil.rmtree(self.path)  # an earlier attempt that stopped before training: nothing to keep
        if resume:
            if not (self / RUN_MARKER).is_file():
                raise VlmtuneError(f"{self.path}: nothing to resume (no {RUN_MARKER}); start without --resume")
            self.check_resume_config(cfg)  # before config.yaml is rewritten with the new one
        elif self.path.exists() and any(self.path.iterdir()):
            if not overwrite:
                raise VlmtuneError(f"{self.path}: folder holds another run; pass --overwrite or set output_dir=NEW_DIR")
            elif (self / RUN_MARKER).is_file():
                shutil.rmtree(self.path)  # only ever delete what is recognisably a vlmtune run
            else:
                raise VlmtuneError(f"{self.path}: folder is not a vlmtune run and is not empty; choose another output_dir")
        self.path.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self / "config.yaml")
        write_json(self / "versions.json", versions())
        if not resume:
            self.mark(cfg, status="prepared")
        return self

    def mark(self, cfg: RunConfig, status: str, weights: str = ADAPTER_DIR, **extra) -> None:
        info = {**self.info, "model": asdict(cfg.model), "weights": weights, "status": status, **extra}
        write_json(self / RUN_MARKER, info)

    def check_resume_config(self, cfg: RunConfig) -> None:
        """Refuse a resume whose resolved config differs from the run's beyond ``RESUMABLE`` keys."""
        saved = self / "config.yaml"
        try:
            old = flatten(yaml.safe_load(saved.read_text()) or {})
        except (OSError, yaml.YAMLError):
            raise VlmtuneError(f"{saved}: missing or unreadable, so --resume cannot check it is the same run") from None
        new, defaults = flatten(to_dict(cfg)), flatten(to_dict(RunConfig()))
        changed = [k for k in sorted(old.keys() | new.keys())
                   if not resumable(k) and old.get(k, defaults.get(k)) != new.get(k, defaults.get(k))]
        if changed:
            what = ", ".join(f"{k}: {old.get(k, defaults.get(k))!r} -> {new.get(k)!r}" for k in changed[:3])
            more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
            raise VlmtuneError(
                f"{self.path}: --resume with a different config ({what}{more}); resume with the run's own "
                f"(-c {saved}), changing only {', '.join(RESUMABLE)}, or start a new run"
            )

    def check_resume_data(self, record: dict) -> None:
        """Refuse a resume on data other than the run's (rows or content of any split changed)."""
        old = read_json(self / "data.json")
        if old is None:
            raise VlmtuneError(f"{self / 'data.json'}: missing, so --resume cannot check the data is the run's")
        problem = data_change(old, record)
        if problem:
            raise VlmtuneError(f"{self.path}: --resume on different data ({problem}); restore the run's data "
                               "or start a new run")


# What a resume may change: how long to train, how often to save and log, and what is done after
# training. Everything else (data, model, LoRA, optimizer, batch, seed...) shapes the trained weights.
RESUMABLE = ("output_dir", "train.epochs", "train.max_steps", "train.save_steps", "train.save_total_limit",
             "train.logging_steps", "train.report_to", "eval.*", "data.label_column", "data.label_parser")


def resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in RESUMABLE)


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def data_change(old: dict, new: dict) -> str | None:
    """How two ``data.json`` records differ, or None: rows, then content digest (else datasets' fingerprint)."""
    for split in sorted(old.keys() | new.keys()):
        a, b = old.get(split) or {}, new.get(split) or {}
        if a.get("rows", 0) != b.get("rows", 0):
            return f"split {split}: {b.get('rows', 0)} rows now, {a.get('rows', 0)} in the run"
        key = "content" if a.get("content") and b.get("content") else "fingerprint"
        if a.get(key) != b.get(key):
            return f"split {split}: {key} {b.get(key)} now, {a.get(key)} in the run"
    return None


def inference_config(model: Path, overrides: list[str]) -> RunConfig:
    """A run's own config (its prompt and eval settings) as the defaults, else vlmtune's."""
    run_config = Path(model) / "config.yaml"
    is_run = (Path(model) / RUN_MARKER).is_file() and run_config.is_file()
    # Inference trains nothing: a tracker the run logged to need not be installed here.
    return load_config(run_config if is_run else None, ["train.report_to=none", *overrides])
