"""``vlmtune merge RUN OUT``: a standalone model folder, optionally pushed to the Hugging Face Hub.

The Hub checks (offline mode, token, reachability) run before the merge, so a push that cannot
happen fails in seconds instead of after minutes of merging and saving.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import torch

from vlmtune.data.images import first_line
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.model_card import model_card
from vlmtune.hub import hub_endpoint, hub_offline, hub_token, probe
from vlmtune.models.loading import resolve_model_path
from vlmtune.models.merge import (MERGED_MARKER, MergeSource, adapter_summary, check_output, find_source, load_adapted,
                                  merged_model, prepare_for_plain_use, write_merged)
from vlmtune.run_dir import read_json, versions


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

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, folder_path=out, commit_message="vlmtune merge")
    except Exception as err:  # HTTP, auth and transport errors come in many types; the folder is kept
        raise VlmtuneError(f"--push-to-hub {repo_id}: push failed ({first_line(err)}); the merged model is "
                           f"intact in {out}: retry with 'hf upload {repo_id} {out}'") from None
    return str(url)


def provenance(source: MergeSource, base_path: str, spec, dtype: str) -> dict:
    return {
        "merged_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": str(source.path.resolve()),
        "source_kind": "run" if source.run_info else "adapter",
        "adapter": str(source.adapter.resolve()),
        "base_model": source.base.name,
        "base_path": str(Path(base_path).resolve()) if Path(base_path).exists() else base_path,
        "family": spec.name,
        "dtype": dtype,
        "trained_quantization": source.base.quantization,
        "lora": adapter_summary(source),
        "run_status": source.run_info.get("status"),
        "versions": versions(),
    }


def run_records(run: Path | None) -> dict:
    """What the model card states, read from the run's own files (nothing for a bare adapter)."""
    if run is None:
        return {}
    config = Path(run) / "config.yaml"
    return {"config_text": config.read_text() if config.is_file() else None,
            "data": read_json(Path(run) / "data.json"), "metrics": read_json(Path(run) / "metrics.json")}


def merge(path: Path, out: Path, overwrite: bool = False, base: str | None = None,
          device: torch.device | None = None, hub_repo: str | None = None) -> Path:
    """Merge ``path`` (run dir or adapter dir) into the new folder ``out``; returns ``out``."""
    out = Path(out)
    check_output(out, overwrite)
    source = find_source(path, base)
    # CPU by default: merging is one matmul per layer, and a GPU may be busy training.
    peft_model, processor, spec, dtype = load_adapted(source, device or torch.device("cpu"))
    model = merged_model(peft_model)
    prepare_for_plain_use(model, processor, spec)
    info = provenance(source, resolve_model_path(source.base.name), spec, dtype)
    card = model_card(info, run_records(source.path if source.run_info else None), hub_repo or out.name)
    return write_merged(model, processor, out, {"README.md": card, MERGED_MARKER: json.dumps(info, indent=2, default=str)})


def run_merge(path: Path, out: Path, overwrite: bool = False, base: str | None = None,
              push_to_hub: str | None = None, private: bool = False) -> Path:
    token = hub_preflight(push_to_hub) if push_to_hub else None
    merged = merge(path, out, overwrite=overwrite, base=base, hub_repo=push_to_hub)
    print(f"merged model: {merged} (loads with transformers' AutoModelForImageTextToText / pipeline)")
    if push_to_hub:
        print(f"pushed: {push(merged, push_to_hub, token, private)}")
    return merged
