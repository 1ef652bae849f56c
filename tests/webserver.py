"""`vlmtune serve` as a user starts it: a subprocess on a free loopback port, stopped at the end."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

READY = re.compile(r"vlmtune serve: open (http://127\.0\.0\.1:\d+/)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``url``, ``pid``, ``log`` (all output so far) and ``uploads_dir`` (its private Gradio cache)."""

    def __init__(self, model: Path, workdir: Path, *options: str, timeout: float = 240):
        self.uploads_dir = workdir / "gradio"
        env = {**os.environ, "GRADIO_TEMP_DIR": str(self.uploads_dir), "GRADIO_ANALYTICS_ENABLED": "False",
               "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "vlmtune.cli", "serve", str(model), "--port", str(free_port()), *options]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     cwd=workdir)
        self.pid, self.lines = self.proc.pid, []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        self.url = None
        while self.url is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"vlmtune serve did not start:\n{self.log[-3000:]}")
            found = READY.search(self.log)
            self.url = found.group(1) if found else None
            time.sleep(0.2)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def user_files(self) -> list[Path]:
        """Files in the server's Gradio cache other than the page's own example copies."""
        return [p for p in self.uploads_dir.rglob("*") if p.is_file() and not re.fullmatch(r"test-\d\d\.png", p.name)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # as Ctrl+C: the server deletes what is left
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
