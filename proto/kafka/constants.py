"""What tidelog advertises and how versions map to header versions."""

from __future__ import annotations

import re

from .api_keys import ApiKey
from .messages import APIS

# The README's §1 ranges minus EndTxn v5 (unstable in Kafka): every declared version is served.
# Produce v0-2 stay advertised (kcat gates compression on Produce ∋ 0).
ADVERTISED_VERSIONS: dict[ApiKey, tuple[int, int]] = {
    key: (api.versions.lo, api.versions.hi) for key, api in APIS.items()
}
# First flexible version (compact encodings, tagged fields, header v2/v1), None if never.
FLEXIBLE_FROM: dict[ApiKey, int | None] = {key: api.flexible_from for key, api in APIS.items()}

# KIP-511: ApiVersions v3+ names the client software; Kafka answers INVALID_REQUEST otherwise.
CLIENT_SOFTWARE_RE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?")


def is_flexible(api_key: int, api_version: int) -> bool:
    api = APIS.get(api_key)  # type: ignore[call-overload]
    return api is not None and api_version in api.flexible


def request_header_version(api_key: int, api_version: int) -> int:
    return 2 if is_flexible(api_key, api_version) else 1


def response_header_version(api_key: int, api_version: int) -> int:
    # ApiVersions responses always use header v0 so that a client can read them whatever
    # version it asked for.
    if api_key == ApiKey.API_VERSIONS:
        return 0
    return 1 if is_flexible(api_key, api_version) else 0


def valid_client_software(name: str, version: str) -> bool:
    """The ApiVersions v3+ check on client_software_name/version (KIP-511)."""
    return bool(CLIENT_SOFTWARE_RE.fullmatch(name) and CLIENT_SOFTWARE_RE.fullmatch(version))


def api_versions_entries(supported: dict[ApiKey, tuple[int, int]] | None = None) -> list[dict]:
    """The ``api_keys`` list of an ApiVersions response body."""
    table = ADVERTISED_VERSIONS if supported is None else supported
    return [{"api_key": int(k), "min_version": lo, "max_version": hi}
            for k, (lo, hi) in sorted(table.items())]
