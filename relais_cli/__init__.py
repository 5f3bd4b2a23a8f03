"""``relais``: the operator and developer command line of Relais.

It onboards pharmacies and manages their keys (on the local stack or a deployed stage), shows what the
local stack sent to the national stand-in and to patients, and runs a one-minute demo. See ``docs/cli.md``.
"""

from __future__ import annotations
