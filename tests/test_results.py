"""Atomic result files and run keys (the sweep engine is tested in test_sweep.py)."""

import json

import pytest

from pwgf.experiments import results


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    results.atomic_write_json(target, {"a": 1})
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
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
    key = results.run_key({"b": 2, "a": "x/y"})
    assert key == results.run_key({"a": "x/y", "b": 2})
    assert key.startswith("a=x-y__b=2__") and len(key) == len("a=x-y__b=2__") + 20 and "/" not in key


def test_results_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path / "elsewhere"))
    assert results.summary_path("poisson_inference") == tmp_path / "elsewhere" / "poisson_inference" / "summary.json"
    monkeypatch.setenv(results.RESULTS_ENV, "relative/path")
    with pytest.raises(ValueError, match="PWGF_RESULTS_DIR must be an absolute path"):
        results.results_dir()


def test_results_dir_defaults_to_the_repository_root(tmp_path, monkeypatch):
    monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    (tmp_path / "_toc.yml").write_text("format: jb-book\n")
    (tmp_path / "book").mkdir()
    assert results.results_dir(tmp_path / "book") == tmp_path / "results"
    monkeypatch.chdir(tmp_path / "book")
    assert results.summary_path("error_vs_samples") == tmp_path / "results" / "error_vs_samples" / "summary.json"


def test_results_dir_outside_a_repository_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv(results.RESULTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="no parent of .* holds _toc.yml"):
        results.results_dir(tmp_path)


def test_read_summary_names_the_command_that_writes_it(tmp_path, monkeypatch):
    monkeypatch.setenv(results.RESULTS_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="run `make experiments`.*notebooks/poisson_inference.md"):
        results.read_summary("poisson_inference")
    results.atomic_write_json(tmp_path / "poisson_inference" / "summary.json", {"rows": []})
    assert results.read_summary("poisson_inference") == {"rows": []}


@pytest.mark.parametrize("name", ["", "../poisson_inference", "a/b"])
def test_summary_path_rejects_paths(name):
    with pytest.raises(ValueError, match="experiment must be a notebook name"):
        results.summary_path(name)
