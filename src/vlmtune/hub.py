"""Can the Hugging Face Hub be used from here? Answered in seconds, so offline use fails fast
instead of after transformers' half-minute of retries."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

PROBE_SECONDS = 5.0


def hub_offline() -> bool:
    from huggingface_hub import constants

    # The hub library reads HF_HUB_OFFLINE once at import; the environment may have changed since.
    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def hub_token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def probe(endpoint: str, timeout: float = PROBE_SECONDS) -> str | None:
    """None when a TCP connection to the endpoint opens within ``timeout``, else a short reason."""
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError as err:  # DNS, refused, timeout: all mean "not now"
        return f"cannot reach {url.hostname} ({err.strerror or err})"
    return None


def unreachable_reason() -> str | None:
    """None when the hub can be used, else why not (offline mode or no connection)."""
    return "HF_HUB_OFFLINE is set" if hub_offline() else probe(hub_endpoint())
