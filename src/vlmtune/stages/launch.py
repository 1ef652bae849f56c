"""``vlmtune train ... --launch accelerate``: hand the same command to ``accelerate launch``.

No launcher of our own: accelerate (or torchrun) starts the processes and sets the environment
that HF Trainer reads; this only rebuilds the command line and replaces the current process.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from vlmtune.errors import VlmtuneError

LAUNCH_OPTIONS = ("--launch", "--launch-config")


def without_launch_options(argv: list[str]) -> list[str]:
    """``argv`` less ``--launch X`` / ``--launch=X`` and ``--launch-config Y``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in LAUNCH_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in LAUNCH_OPTIONS)):
            out.append(arg)
    return out


def accelerate_command(argv: list[str], config: Path | None) -> list[str]:
    """``accelerate launch [--config_file C] -m vlmtune <argv without the launch options>``."""
    # The accelerate of this environment first (a venv that is not activated), then PATH.
    exe = shutil.which("accelerate", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if exe is None:
        raise VlmtuneError("--launch accelerate: the accelerate command is not on PATH (pip install accelerate)")
    if config is not None and not Path(config).is_file():
        raise VlmtuneError(f"--launch-config {config}: file not found (examples in configs/accelerate/)")
    return [exe, "launch", *(["--config_file", str(config)] if config else []), "-m", "vlmtune",
            *without_launch_options(argv)]


def relaunch(launcher: str, argv: list[str], config: Path | None) -> None:
    """Replace this process with ``launcher``'s; never returns."""
    if launcher != "accelerate":
        raise VlmtuneError(f"--launch {launcher}: only 'accelerate' is supported (or run torchrun yourself)")
    if "LOCAL_RANK" in os.environ:
        raise VlmtuneError("--launch accelerate: this process was already started by a launcher; drop --launch")
    command = accelerate_command(argv, config)
    print("launching: " + " ".join(command), flush=True)
    os.execv(command[0], command)
