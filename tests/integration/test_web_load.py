"""`vlmtune serve` under load, on loopback only: 20 concurrent requests twice, bounded in count and time.

Every request must be answered (queued ones wait, none errors), no upload may stay on disk, and the
server's memory must not grow with the number of pictures it has seen: the second burst of 20 new
1600x1200 pictures (5.8 MB each decoded) must leave its RSS within RSS_BOUND_MB of the first's.
"""

from __future__ import annotations

import time

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from vlmtune.config import load_config
from vlmtune.data.pictures import open_picture
from vlmtune.evaluation.generate import generate_answers
from vlmtune.models.loading import load_for_inference

PROMPT = "describe this picture"
pytestmark = pytest.mark.slow  # a server subprocess and real models

BURST = 20
REQUEST_TIMEOUT = 300  # seconds for a whole burst on a contended 2-core machine
RSS_BOUND_MB = 48  # a leak of the decoded pictures alone would add 20 x 5.8 MB = 115 MB


def pictures(folder, n: int, seed: int) -> list:
    """Distinct smooth pictures: large when decoded, small (< 100 kB) as JPEG."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:1200, 0:1600]
    paths = []
    for i in range(n):
        a, b, c = rng.uniform(0.002, 0.02, 3)
        rgb = np.stack([np.sin(a * xx + i), np.cos(b * yy), np.sin(c * (xx + yy))], -1)
        paths.append(folder / f"burst{seed}-{i:02d}.jpg")
        Image.fromarray(((rgb + 1) * 127.5).astype(np.uint8)).save(paths[-1], quality=85)
    return paths


def burst(client, paths) -> tuple[list, set]:
    """Submit all at once; (final outputs, every status the client saw)."""
    from gradio_client import handle_file

    jobs = [client.submit(handle_file(str(p)), PROMPT, 6, False, 1.0, api_name="/compare") for p in paths]
    deadline, seen = time.monotonic() + REQUEST_TIMEOUT, set()
    while not all(job.done() for job in jobs) and time.monotonic() < deadline:
        seen.update(job.status().code for job in jobs)
        time.sleep(0.02)
    return [job.result(timeout=max(1.0, deadline - time.monotonic())) for job in jobs], seen


def expected_answers(run, base_dir, paths) -> list[tuple[str, str]]:
    """Batched generation of the same models on the same decoded pictures, in this process."""
    cfg = load_config(overrides=["eval.max_new_tokens=6"]).eval  # the run's setting, which the server uses
    images = [open_picture(p) for p in paths]
    answers = [generate_answers(*load_for_inference(m), images, [PROMPT] * len(images), cfg) for m in (base_dir, run)]
    return list(zip(*answers))


def test_twenty_concurrent_requests_are_answered_and_memory_stays_flat(served_run, tiny_run_dir, tiny_model_dir,
                                                                        tmp_path):
    from gradio_client import Client
    from gradio_client.utils import Status

    assert served_run.url.startswith("http://127.0.0.1:")  # loopback only
    client = Client(served_run.url, verbose=False)
    server = psutil.Process(served_run.pid)
    rss = []
    for seed in (1, 2):
        paths = pictures(tmp_path, BURST, seed)
        results, seen = burst(client, paths)
        rss.append(server.memory_info().rss / 2**20)
        assert Status.IN_QUEUE in seen and Status.QUEUE_FULL not in seen  # the rest waited in Gradio's queue
        assert all("1600×1200 px" in status and "vt-error" not in status for status, _, _ in results)
        # Each answer is its own picture's, from the right model: no cross-talk between concurrent requests.
        assert [tuple(r[1:]) for r in results] == expected_answers(tiny_run_dir, tiny_model_dir, paths)
    assert rss[1] - rss[0] < RSS_BOUND_MB, f"server RSS grew from {rss[0]:.0f} to {rss[1]:.0f} MB"
    assert served_run.proc.poll() is None
    assert served_run.user_files() == []  # 40 uploads, all deleted after their answers


def test_an_upload_over_the_limit_is_refused_and_the_server_keeps_serving(served_run):
    big = b"\xff\xd8" + b"\0" * (1024 * 1024 + 10)  # just over --max-upload-mb 1
    refused = httpx.post(served_run.url + "gradio_api/upload", files={"files": ("big.jpg", big, "image/jpeg")},
                         timeout=30)
    assert refused.status_code == 413 and "maximum allowed size" in refused.text
    assert httpx.get(served_run.url, timeout=30).status_code == 200
    assert served_run.user_files() == []
