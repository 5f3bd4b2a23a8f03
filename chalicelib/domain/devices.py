"""EU rapid antigen test devices: display names for ``test.device_id``.

The bundled list (``chalicelib/data/eu-rat-devices.json``, see the README next to it) is the EU value set
``covid-19-lab-test-manufacturer-and-name`` as of 2021-07-01: an example snapshot, not exhaustive. Use it to
name a device, not to refuse one; an unknown id simply has no name. It is read once, on first use.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Final

_DEVICES_FILE: Final = Path(__file__).resolve().parent.parent / "data" / "eu-rat-devices.json"


@cache
def _devices() -> dict[str, str]:
    """Device id → display name ("manufacturer, commercial name"), from the bundled value set."""
    with _DEVICES_FILE.open(encoding="utf-8") as file:
        values = json.load(file)["valueSetValues"]
    return {str(device_id): str(entry["display"]) for device_id, entry in values.items()}


def device_name(device_id: str) -> str | None:
    """The display name of an EU rapid antigen test device, or None when the id is not in the snapshot."""
    return _devices().get(device_id)


@cache
def known_device_ids() -> frozenset[str]:
    """Every device id in the bundled snapshot (active or not); an example list, not an allowlist."""
    return frozenset(_devices())
