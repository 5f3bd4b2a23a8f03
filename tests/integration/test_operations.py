"""Operator commands in-process against moto: usage (billing), audit queries, erasure, dead letters."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib import bootstrap
from relais_cli.main import main
from tests.integration.helpers import distinctive_body, get_result, post_result, register_pharmacy, signed_headers


def run(capsys, *argv: str) -> tuple[int, object]:
    capsys.readouterr()  # drop the API's own log lines printed so far
    code = main(["--json", *argv])
    out = capsys.readouterr().out
    return code, json.loads(out)


@pytest.fixture
def cli(client, monkeypatch, tmp_path):
    monkeypatch.setenv("RELAIS_CLI_USE_ENV", "1")
    monkeypatch.setenv("RELAIS_STATE_DIR", str(tmp_path / "state"))
    return client


def test_usage_counts_each_accepted_result_once_and_never_duplicates_or_conflicts(cli, capsys):
    a, b = register_pharmacy(), register_pharmacy()
    bodies = [distinctive_body(f"U-{i}") for i in range(3)]
    for body in bodies:
        assert post_result(cli, a, body).status_code == 201
    assert post_result(cli, a, bodies[0]).status_code == 200  # identical retry: not billable
    conflicting = json.loads(json.dumps(bodies[1]))
    conflicting["test"]["result"] = "positive"
    assert post_result(cli, a, conflicting).status_code == 409  # conflict: not billable
    assert post_result(cli, b, distinctive_body("V-0")).status_code == 201
    month = datetime.now(UTC).strftime("%Y-%m")
    code, rows = run(capsys, "usage", "--month", month)
    assert code == 0
    counts = {r["pharmacy_id"]: r["results"] for r in rows}
    assert counts[a.pharmacy_id] == 3
    assert counts[b.pharmacy_id] == 1
    assert set(rows[0]) == {"pharmacy_id", "finess", "results", "withdrawn_same_day"}
    capsys.readouterr()
    assert main(["usage", "--help"]) == 0
    documented = re.search(r"JSON: \[\{([^}]*)\}\]", " ".join(capsys.readouterr().out.split()))
    assert documented, "relais usage --help gives the JSON shape"
    assert set(re.findall(r'"(\w+)"', documented.group(1))) == set(rows[0]), "--help names every field, no other"
    _, other = run(capsys, "usage", "--month", "2001-01")
    assert all(r["results"] == 0 for r in other)


def test_usage_prints_csv_when_asked(cli, capsys):
    a = register_pharmacy()
    assert post_result(cli, a, distinctive_body("C-1")).status_code == 201
    capsys.readouterr()
    assert main(["usage", "--month", datetime.now(UTC).strftime("%Y-%m"), "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "pharmacy_id,finess,results,withdrawn_same_day"
    assert f"{a.pharmacy_id},{a.finess},1,0" in lines


def test_usage_does_not_bill_a_result_withdrawn_the_day_it_was_received_and_says_so(cli, capsys):
    a = register_pharmacy()
    ids = []
    for i in range(2):
        response = post_result(cli, a, distinctive_body(f"W-{i}"))
        assert response.status_code == 201
        ids.append(json.loads(response.body)["id"])
    path = f"/v1/results/{ids[0]}/correction"
    raw = json.dumps({"correction_reference": "W", "reason": "entered_in_error"}).encode()
    assert cli.http.post(path, body=raw, headers=signed_headers(a, "POST", path, raw)).status_code == 202
    path = f"/v1/results/{ids[1]}/correction"
    raw = json.dumps({"correction_reference": "C", "reason": "wrong_result", "result": "positive"}).encode()
    assert cli.http.post(path, body=raw, headers=signed_headers(a, "POST", path, raw)).status_code == 202
    month = datetime.now(UTC).strftime("%Y-%m")
    _, rows = run(capsys, "usage", "--month", month)
    [row] = [r for r in rows if r["pharmacy_id"] == a.pharmacy_id]
    assert (row["results"], row["withdrawn_same_day"]) == (1, 1)  # a correction is billed as before
    assert main(["usage", "--month", month]) == 0
    assert "withdrawn the day received: not billed" in capsys.readouterr().out


def test_a_bad_month_is_a_usage_error(cli, capsys):
    assert main(["--json", "usage", "--month", "2026-13"]) == 2
    assert "YYYY-MM" in json.loads(capsys.readouterr().out)["error"]


def test_audit_answers_who_read_what_when_for_a_result(cli, capsys):
    a, intruder = register_pharmacy(), register_pharmacy()
    rid = json.loads(post_result(cli, a, distinctive_body("AU-1")).body)["id"]
    assert get_result(cli, a, rid).status_code == 200
    assert get_result(cli, intruder, rid).status_code == 404
    code, events = run(capsys, "audit", "--result-id", rid)
    assert code == 0
    assert [(e["action"], e["outcome"], e["actor"]) for e in events] == [
        ("result.create", "success", f"key:{a.key_id}"),
        ("result.read", "success", f"key:{a.key_id}"),
        ("result.read", "not_found", f"key:{intruder.key_id}"),
    ]
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    _, mine = run(capsys, "audit", "--since", since, "--pharmacy", a.pharmacy_id)
    assert {e["action"] for e in mine} == {"result.create", "result.read"}
    assert all(e["pharmacy_id"] == a.pharmacy_id for e in mine)


def test_erasure_makes_the_result_unreadable_at_once_and_is_audited(cli, capsys):
    a = register_pharmacy()
    body = distinctive_body("ER-1")
    rid = json.loads(post_result(cli, a, body).body)["id"]
    code, doc = run(capsys, "result", "erase", "--id", rid, "--operator", "dpo", "--yes")
    assert code == 0
    assert set(doc) == {"id", "erased_at"}
    assert bootstrap.store().get_result(rid) is None
    assert get_result(cli, a, rid).status_code == 404
    assert post_result(cli, a, body).status_code == 409  # the reference stays taken, the data is gone
    from tests.integration.helpers import scan

    (item,) = [i for i in scan("RELAIS_RESULTS_TABLE") if i["id"]["S"] == rid]
    assert "payload" not in item and "reference_sealed" not in item
    _, events = run(capsys, "audit", "--result-id", rid)
    assert ("result.erase", "operator:dpo") in {(e["action"], e["actor"]) for e in events}
    assert main(["--json", "result", "erase", "--id", "x" * 24]) == 1


def test_results_past_their_retention_are_not_readable_even_before_ttl_deletes_them(cli, monkeypatch):
    a = register_pharmacy()
    rid = json.loads(post_result(cli, a, distinctive_body("RT-1")).body)["id"]
    assert bootstrap.store().get_result(rid) is not None
    bootstrap.override(clock=lambda: datetime.now(UTC) + timedelta(days=89))
    assert bootstrap.store().get_result(rid) is not None
    bootstrap.override(clock=lambda: datetime.now(UTC) + timedelta(days=90, seconds=5))
    assert bootstrap.store().get_result(rid) is None


def test_dead_letters_are_listed_and_redriven_from_the_cli(cli, capsys):
    a = register_pharmacy()
    rid = json.loads(post_result(cli, a, distinctive_body("DL-1")).body)["id"]
    bootstrap.national_queue().dead_letter(rid, "http-400:invalid", 1)
    bootstrap.national_statuses().mark_failed(rid, "http-400:invalid")
    code, letters = run(capsys, "dlq", "list")
    assert code == 0
    assert [(d["result_id"], d["reason"], d["attempts"]) for d in letters] == [(rid, "http-400:invalid", 1)]
    code, moved = run(capsys, "dlq", "redrive", "--id", rid)
    assert moved == {"redriven": [rid]}
    assert bootstrap.store().get_result(rid).national_status == "pending"
    assert run(capsys, "dlq", "list")[1] == []


def test_erasure_asks_first_and_a_dry_run_changes_nothing(cli, capsys):
    a = register_pharmacy()
    rid = json.loads(post_result(cli, a, distinctive_body("ER-2")).body)["id"]

    code, doc = run(capsys, "result", "erase", "--id", rid)  # no --yes and no terminal to ask
    assert code == 1
    assert "add --yes to confirm, or --dry-run" in doc["error"]
    code, doc = run(capsys, "result", "erase", "--id", rid, "--dry-run")
    assert (code, doc) == (0, {"id": rid, "erased_at": None, "dry_run": True})
    assert get_result(cli, a, rid).status_code == 200, "nothing was erased"
    code, doc = run(capsys, "result", "erase", "--id", "x" * 24, "--dry-run")
    assert code == 1
    assert doc["error"].startswith("no result")


def test_erasure_asks_at_the_terminal(cli, capsys, monkeypatch):
    import io

    a = register_pharmacy()
    rid = json.loads(post_result(cli, a, distinctive_body("ER-3")).body)["id"]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal("no\n"))
    assert run(capsys, "result", "erase", "--id", rid)[1] == {"error": "cancelled: nothing was changed"}
    assert get_result(cli, a, rid).status_code == 200
    monkeypatch.setattr("sys.stdin", Terminal("yes\n"))
    code, doc = run(capsys, "result", "erase", "--id", rid)
    assert code == 0
    assert doc["id"] == rid
    assert get_result(cli, a, rid).status_code == 404


def test_redriving_every_dead_letter_asks_first_offers_a_dry_run_and_shows_progress(cli, capsys, monkeypatch):
    a = register_pharmacy()
    rids = [json.loads(post_result(cli, a, distinctive_body(f"DL-R{i}")).body)["id"] for i in range(3)]
    for rid in rids:
        bootstrap.national_queue().dead_letter(rid, "http-400:invalid", 1)

    code, doc = run(capsys, "dlq", "redrive")
    assert code == 1
    assert "add --yes" in doc["error"]
    code, doc = run(capsys, "dlq", "redrive", "--dry-run")
    assert code == 0
    assert doc["redriven"] == [] and sorted(doc["would_redrive"]) == sorted(rids)
    assert len(run(capsys, "dlq", "list")[1]) == 3, "a dry run leaves every dead letter"

    monkeypatch.setenv("RELAIS_PROGRESS", "1")
    capsys.readouterr()
    assert main(["--json", "dlq", "redrive", "--yes"]) == 0
    captured = capsys.readouterr()
    assert sorted(json.loads(captured.out)["redriven"]) == sorted(rids)
    assert "redrive national" in captured.err and "3letter" in captured.err.replace(" ", "")
    assert run(capsys, "dlq", "list")[1] == []


def test_usage_and_audit_verify_show_progress_on_stderr_only(cli, capsys, monkeypatch):
    a = register_pharmacy()
    assert post_result(cli, a, distinctive_body("PG-1")).status_code == 201
    monkeypatch.setenv("RELAIS_PROGRESS", "1")
    capsys.readouterr()
    assert main(["--json", "usage", "--month", datetime.now(UTC).strftime("%Y-%m")]) == 0
    captured = capsys.readouterr()
    assert isinstance(json.loads(captured.out), list)
    assert "usage " in captured.err and "counter" in captured.err
    main(["--json", "audit", "verify"])
    captured = capsys.readouterr()
    assert "events" in json.loads(captured.out)
    assert "audit chain" in captured.err
    monkeypatch.setenv("RELAIS_PROGRESS", "0")
    assert main(["--json", "usage", "--month", "2001-01"]) == 0
    assert "usage " not in capsys.readouterr().err
