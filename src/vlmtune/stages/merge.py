"""``vlmtune merge RUN OUT``: a standalone model folder, optionally pushed to the Hugging Face Hub.

The Hub checks (offline mode, token, reachability) run before the merge, so a push that cannot
happen fails in seconds instead of after minutes of merging and saving.
"""

from __future__ import annotations

from pathlib import Path

from vlmtune.errors import VlmtuneError
from vlmtune.hub import hub_endpoint, hub_offline, hub_token, probe
from vlmtune.models.merge import merge

def hub_preflight(repo_id: str) -> str:
    """The token to push with, or a one-line reason why pushing cannot work from here."""
    if hub_offline():
        raise VlmtuneError(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set; unset it to push, "
                           "or merge without --push-to-hub")
    token = hub_token()
    if not token:
        raise VlmtuneError(f"--push-to-hub {repo_id}: no Hugging Face token; run 'hf auth login' or set HF_TOKEN")
    reason = probe(hub_endpoint())
    if reason:
        raise VlmtuneError(f"--push-to-hub {repo_id}: {reason}; check the network or merge without --push-to-hub")
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
