from __future__ import annotations

from chalicelib.domain.records import new_id


def test_ids_never_start_with_a_dash_so_command_lines_take_them():
    ids = [new_id() for _ in range(5000)]
    assert not any(i.startswith("-") for i in ids)
    assert min(len(i) for i in ids) >= 22
    assert len(set(ids)) == len(ids)
