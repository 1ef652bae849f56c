"""A self-describing run directory: what later stages read instead of re-asking.

    run/
      vlmtune_run.json   marker: base model, family, where the weights are, status
      config.yaml        the resolved config (all defaults filled in)
      versions.json      python / torch / transformers / peft ... and the device
      data.json          dataset fingerprint and sizes
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

from vlmtune.config import RunConfig, save_config
from vlmtune.errors import VlmtuneError
from vlmtune.models.loading import ADAPTER_DIR, RUN_MARKER

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
        if self.path.exists() and any(self.path.iterdir()):
            if resume:
                if not (self / RUN_MARKER).is_file():
                    raise VlmtuneError(f"{self.path}: nothing to resume (no {RUN_MARKER}); start without --resume")
            elif not overwrite:
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
