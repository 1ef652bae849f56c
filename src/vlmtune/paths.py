"""Where things live: caches (XDG base directory spec, overridable with VLMTUNE_CACHE) and the
names of the files in a run directory, which both the writer (run_dir) and the loaders (models)
need and neither may import from the other."""

import os
from pathlib import Path


def cache_root() -> Path:
    if os.environ.get("VLMTUNE_CACHE"):
        return Path(os.environ["VLMTUNE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "vlmtune"


# Run directory layout (see run_dir.py).
RUN_MARKER = "vlmtune_run.json"
ADAPTER_DIR = "adapter"
FULL_MODEL_DIR = "model"
