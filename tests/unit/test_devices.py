"""The bundled EU rapid antigen test device list."""

from __future__ import annotations

import json
from pathlib import Path

import chalicelib
from chalicelib.domain.devices import device_name, known_device_ids
from chalicelib.domain.validation import parse_submission
from tests.factories import FIXED_NOW, VALID_DEVICE_ID, valid_body

DATA_DIR = Path(chalicelib.__file__).parent / "data"


def test_a_listed_device_id_has_its_manufacturer_and_commercial_name():
    assert device_name("1232") == "Abbott Rapid Diagnostics, Panbio COVID-19 Ag Rapid Test"
    assert device_name("1468") == "ACON Laboratories, Inc, Flowflex SARS-CoV-2 Antigen rapid test"


def test_an_unlisted_device_id_has_no_name():
    assert device_name("999999") is None
    assert device_name("") is None


def test_the_snapshot_holds_the_88_devices_of_2021_07_01_all_with_digit_ids():
    ids = known_device_ids()

    assert isinstance(ids, frozenset)
    assert len(ids) == 88
    assert all(device_id.isascii() and device_id.isdigit() for device_id in ids)


def test_every_known_device_has_a_name():
    assert all(device_name(device_id) for device_id in known_device_ids())


def test_the_factory_device_is_in_the_snapshot_and_accepted_against_it():
    assert VALID_DEVICE_ID in known_device_ids()
    assert parse_submission(valid_body(), now=FIXED_NOW, known_device_ids=known_device_ids()).test.device_id == "1232"


def test_the_bundled_file_is_the_eu_value_set_snapshot_with_its_attribution():
    data = json.loads((DATA_DIR / "eu-rat-devices.json").read_text(encoding="utf-8"))
    readme = (DATA_DIR / "README.md").read_text(encoding="utf-8")

    assert data["valueSetId"] == "covid-19-lab-test-manufacturer-and-name"
    assert data["valueSetDate"] == "2021-07-01"
    assert "ehn-dcc-development/eu-dcc-valuesets" in readme
    assert "Apache-2.0" in readme
    assert "not exhaustive" in readme


def test_known_device_ids_are_computed_once_and_shared():
    known_device_ids.cache_clear()

    assert known_device_ids() is known_device_ids()
