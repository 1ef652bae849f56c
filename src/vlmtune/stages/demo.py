"""``vlmtune demo``: the whole loop on the embedded default model, no download.

Synthesises chess pictures (cached per recipe), evaluates the aligned base on the test split and
on a held-out render domain (other meshes, colours no train picture has), LoRA fine-tunes,
evaluates again and writes the before/after report.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from vlmtune.config import load_config
from vlmtune.errors import VlmtuneError
from vlmtune.data.synth import cached_set
from vlmtune.paths import cache_root
from vlmtune.data.synth.chess import synth_chess
from vlmtune.models.default import ensure_default_base
from vlmtune.stages.align import run_align
from vlmtune.stages.train import train_run

DEMO_CONFIG = resources.files("vlmtune") / "configs" / "demo.yaml"


def chess_data(n: int, size: int, seed: int, test_ratio: float, domain: str = "train") -> Path:
    """Synthesised once per recipe into the cache; a repeat demo reuses the pictures."""
    recipe = {"n": n, "size": size, "seed": seed, "test_ratio": test_ratio, **({"domain": domain} if domain != "train" else {})}
    return cached_set("chess", recipe, lambda out: synth_chess(out, n=n, seed=seed, size=size, test_ratio=test_ratio,
                                                              domain=domain))


def heldout_domain(n: int, size: int, seed: int) -> list[str]:
    """``data.heldout_domain=`` the held-out render domain (other meshes and colours), or nothing
    with a note when its meshes cannot be fetched: the demo still runs."""
    try:
        return [f"data.heldout_domain={chess_data(n, size, seed + 1000, 1.0, domain='heldout')}"]
    except VlmtuneError as err:
        print(f"note: no held-out render domain in this demo ({err})")
        return []


def realigned_base() -> Path:
    """Stage 1 again (``vlmtune align`` into the cache instead of the packaged projector)."""
    projector = cache_root() / "projector-realigned.safetensors"
    run_align(out=projector, steps=300, n_images=3000, seed=0, overrides=[])
    return ensure_default_base(projector=projector)


def run_demo(out: Path, config_file: Path | None, overrides: list[str], pictures: int = 800,
             test_pictures: int = 48, size: int = 224, seed: int = 0, realign: bool = False) -> dict:
    start = time.perf_counter()
    print(f"vlmtune demo: {pictures} synthetic chess pictures ({test_pictures} held out), embedded default model")
    if realign:
        overrides = [f"model.name={realigned_base()}", *overrides]
    data = chess_data(pictures, size, seed, test_pictures / pictures)
    domain = heldout_domain(test_pictures, size, seed)
    cfg = load_config(config_file or Path(str(DEMO_CONFIG)), [f"output_dir={out}", f"data.path={data}", *domain, *overrides])
    metrics = train_run(cfg, overwrite=True)
    minutes = (time.perf_counter() - start) / 60
    print(f"demo finished in {minutes:.1f} min; open {Path(cfg.output_dir) / 'report.html'}")
    print(f"see it in the browser, on your own photos: vlmtune serve {cfg.output_dir}")
    return metrics
