"""Atomic result files and run keys (the sweep engine is tested in test_sweep.py)."""

import json

import pytest

from pwgf import results


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    results.atomic_write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        results.atomic_write_json(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_open_writes_bytes_and_rejects_other_modes(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    with results.atomic_open(target, "wb") as handle:
        handle.write(b"\x00\x01")
        assert not target.exists()  # nothing visible before the rename
    assert target.read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"):
        with results.atomic_open(target, "a"):
            pass
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


def test_run_key_is_order_independent_and_path_safe():
    assert results.run_key({"b": 2, "a": "x/y"}) == results.run_key({"a": "x/y", "b": 2}) == "a=x-y__b=2"
