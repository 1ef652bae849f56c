"""Where vlmtune keeps caches (XDG base directory spec), overridable with VLMTUNE_CACHE."""

import os
from pathlib import Path


def cache_root() -> Path:
    if os.environ.get("VLMTUNE_CACHE"):
        return Path(os.environ["VLMTUNE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "vlmtune"
