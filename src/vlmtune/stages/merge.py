"""``vlmtune merge RUN OUT``: a standalone model folder, optionally pushed to the Hugging Face Hub.

The Hub checks (offline mode, token, reachability) run before the merge, so a push that cannot
happen fails in seconds instead of after minutes of merging and saving.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from vlmtune.errors import VlmtuneError
from vlmtune.models.merge import merge

PROBE_SECONDS = 3.0


def hub_token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_offline() -> bool:
    from huggingface_hub import constants

    # The hub library reads HF_HUB_OFFLINE once at import; the environment may have changed since.
    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def hub_preflight(repo_id: str) -> str:
    """The token to push with, or a one-line reason why pushing cannot work from here."""
    if hub_offline():
        raise VlmtuneError(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set; unset it to push, "
                           "or merge without --push-to-hub")
    token = hub_token()
    if not token:
        raise VlmtuneError(f"--push-to-hub {repo_id}: no Hugging Face token; run 'hf auth login' or set HF_TOKEN")
    url = urlparse(hub_endpoint())
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), PROBE_SECONDS).close()
    except OSError as err:
        raise VlmtuneError(f"--push-to-hub {repo_id}: cannot reach {url.hostname} ({err.strerror or err}); "
                           "check the network or merge without --push-to-hub") from None
    return token


def push(out: Path, repo_id: str, token: str, private: bool) -> str:
    from huggingface_hub import HfApi

    from vlmtune.data.images import first_line

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=out, commit_message="vlmtune merge")
    except Exception as err:  # HTTP, auth and transport errors come in many types; the folder is kept
        raise VlmtuneError(f"--push-to-hub {repo_id}: push failed ({first_line(err)}); the merged model is "
                           f"intact in {out}: retry with 'hf upload {repo_id} {out}'") from None
    return str(url)


def run_merge(path: Path, out: Path, overwrite: bool = False, base: str | None = None,
              push_to_hub: str | None = None, private: bool = False) -> Path:
    token = hub_preflight(push_to_hub) if push_to_hub else None
    merged = merge(path, out, overwrite=overwrite, base=base, hub_repo=push_to_hub)
    print(f"merged model: {merged} (loads with transformers' AutoModelForImageTextToText / pipeline)")
    if push_to_hub:
        print(f"pushed: {push(merged, push_to_hub, token, private)}")
    return merged
