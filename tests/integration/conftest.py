"""Integration fixtures (moto in-process + chalice.test.Client + real adapters): see ``helpers.py``."""

from __future__ import annotations

from tests.integration.helpers import client, other_pharmacy, pharmacy

__all__ = ["client", "other_pharmacy", "pharmacy"]
