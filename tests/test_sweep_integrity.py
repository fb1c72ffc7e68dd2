"""Result files that never answer for another config: every integrity case against a real sweep in a temporary folder.

Each test runs :func:`pwgf.experiments.sweep.run_sweep` in this process; where the Dask path differs (results
arrive from worker processes, the run executes in another process), the same case runs on a
LocalCluster of two worker processes on the loopback interface.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import torch

from pwgf.experiments import results, sweep
from pwgf.experiments.results import run_key
from pwgf.experiments.sweep import CorruptResultWarning, code_version, local_cluster, run_config, run_sweep

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(config):
    """A plain run: the square of ``x`` (any JSON number or string holding one)."""
    return {"y": float(config["x"]) ** 2, "x_type": type(config["x"]).__name__}


def echo(config):
    """A plain run: its ``x``, whatever it is."""
    return {"x": config["x"]}


def tensor_for_two(config):
    """A run whose result is not JSON for ``x == 2`` (a tensor)."""
    return {"y": torch.tensor(float(config["x"])) if config["x"] == 2 else float(config["x"])}


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def counting(run):
    """``run`` that records the configs it is called with in ``calls``."""
    calls = []

    def counted(config):
        calls.append(config["x"])
        return run(config)

    counted.__module__ = run.__module__
    return counted, calls


# --- keys are injective, and a file answers only for its own config -------------------------------------


@pytest.mark.parametrize(("first", "second"), [(0.0001, "0.0001"), ("a/b", "a-b"), (1, 1.0), (True, 1), ([1, 2], "[1, 2]")])
def test_configs_that_differ_as_json_get_their_own_files_and_results(tmp_path, first, second):
    run, calls = counting(echo)
    a = run_sweep([{"x": first}], run, tmp_path, workers=1)
    b = run_sweep([{"x": second}], run, tmp_path, workers=1)
    assert calls == [first, second]  # the second sweep did not reuse the first one's file
    assert a[0]["config"]["x"] == a[0]["result"]["x"] == first and b[0]["config"]["x"] == b[0]["result"]["x"] == second
    assert type(a[0]["config"]["x"]) is type(first) and type(b[0]["config"]["x"]) is type(second)
    assert len(files(tmp_path)) == 2
    assert run_key(run_config({"x": first}, run)) != run_key(run_config({"x": second}, run))


def test_a_file_holding_another_config_is_moved_aside_and_recomputed(tmp_path):
    run, calls = counting(square)
    (record,) = run_sweep([{"x": 3}], run, tmp_path, workers=1)
    path = tmp_path / f"{run_key(record['config'])}.json"
    edited = {"config": {**record["config"], "x": 4}, "result": {"y": 16.0, "x_type": "int"}}  # hand-edited: another config
    path.write_text(json.dumps(edited))
    with pytest.warns(CorruptResultWarning, match=rf"result file .*{path.name} holds another config .*'x': 4.*moved to {path.name}.corrupt"):
        (again,) = run_sweep([{"x": 3}], run, tmp_path, workers=1)
    assert calls == [3, 3] and again == record
    assert json.loads((tmp_path / f"{path.name}.corrupt").read_text()) == edited  # kept for inspection


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"config": {"x": 3, "co', r"is not valid JSON \(Unterminated string"),  # half-copied
        ("\xff\xfe not text", r"is not valid JSON \('utf-8' codec can't decode"),
        ('{"config": {"x": 3}}', r"is not a result record"),
        ("[1, 2]", r"is not a result record"),
    ],
)
def test_a_corrupt_result_file_is_named_moved_aside_and_recomputed(tmp_path, content, problem):
    run, calls = counting(square)
    (record,) = run_sweep([{"x": 3}], run, tmp_path, workers=1)
    path = tmp_path / f"{run_key(record['config'])}.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.warns(CorruptResultWarning, match=rf"result file {path} {problem}.*moved to {path.name}.corrupt, and its run is computed again"):
        assert run_sweep([{"x": 3}], run, tmp_path, workers=1) == [record]
    path.write_bytes(content.encode("latin-1"))  # corrupt again: the first copy set aside is kept
    with pytest.warns(CorruptResultWarning, match=rf"moved to {path.name}.corrupt-2"):
        run_sweep([{"x": 3}], run, tmp_path, workers=1)
    assert calls == [3, 3, 3]
    assert files(tmp_path) == sorted([path.name, f"{path.name}.corrupt", f"{path.name}.corrupt-2"])
    assert (tmp_path / f"{path.name}.corrupt").read_bytes() == content.encode("latin-1")


def test_a_file_of_the_same_config_is_reused_without_a_run(tmp_path):
    run, calls = counting(square)
    first = run_sweep([{"x": 2}, {"x": 3}], run, tmp_path, workers=1)
    assert run_sweep([{"x": 3}, {"x": 2}], run, tmp_path, workers=1) == first[::-1]
    assert calls == [2, 3]


# --- the library code version ---------------------------------------------------------------------


def test_every_config_gets_the_code_version_of_its_run(tmp_path):
    records = run_sweep([{"x": 1}], square, tmp_path, workers=1)
    assert records[0]["config"] == {"x": 1, "code": code_version(square)}
    with pytest.raises(ValueError, match=r"run 0 of the sweep .*config\['code'\] is 'stale', but the library code that run executes has version"):
        run_sweep([{"x": 1, "code": "stale"}], square, tmp_path, workers=1)


def test_the_code_version_follows_exactly_the_modules_a_run_imports(tmp_path, monkeypatch):
    from pwgf.experiments import poisson_gan, vae_training

    assert "pwgf.experiments.verdict" not in sweep._imported_modules("pwgf.experiments.poisson_gan")
    assert {"pwgf.estimators", "pwgf.mmd", "pwgf.experiments.poisson_gan"} <= sweep._imported_modules("pwgf.experiments.poisson_gan")
    assert {"pwgf.experiments.vae", "pwgf.experiments.mnist", "pwgf.estimators"} <= sweep._imported_modules("pwgf.experiments.vae_training")
    before = {name: code_version(run) for name, run in (("poisson", poisson_gan.train), ("vae", vae_training.train), ("test", square))}
    original = sweep._source

    def edited(module: str) -> Path:  # the library as it would be after an edit of one module
        if module != target:
            return original(module)
        copy = tmp_path / f"{module}.py"
        copy.write_bytes(original(module).read_bytes() + b"\n# edited\n")
        return copy

    monkeypatch.setattr(sweep, "_source", edited)
    for target, changed in (("pwgf.mmd", {"poisson", "vae", "test"}), ("pwgf.experiments.mnist", {"vae", "test"}), ("pwgf.experiments.verdict", {"test"})):
        after = {name: code_version(run) for name, run in (("poisson", poisson_gan.train), ("vae", vae_training.train), ("test", square))}
        assert {name for name in before if after[name] != before[name]} == changed, target


def test_a_library_change_reruns_the_runs_and_keeps_the_old_files(tmp_path, monkeypatch):
    run, calls = counting(square)
    old = run_sweep([{"x": 1}, {"x": 2}], run, tmp_path, workers=1)
    monkeypatch.setattr(sweep, "code_version", lambda r: "0123456789ab")  # what an edit of the library does to the version
    new = run_sweep([{"x": 1}, {"x": 2}], run, tmp_path, workers=1)
    assert calls == [1, 2, 1, 2] and [r["config"]["code"] for r in new] == ["0123456789ab"] * 2
    assert len(files(tmp_path)) == 4 and [r["result"] for r in new] == [r["result"] for r in old]


def test_a_process_with_other_library_code_refuses_the_run():
    config = run_config({"x": 1}, square, code="0123456789ab")
    with pytest.raises(RuntimeError, match=r"made for library code '0123456789ab', but this process runs '[0-9a-f]{12}'"):
        sweep._call(square, config, None)


# --- what cannot be stored as JSON ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (np.float32(0.5), TypeError, r"config\['x'\] is a numpy.float32 .* not JSON-serializable"),
        (torch.tensor(1.0), TypeError, r"config\['x'\] is a torch.Tensor"),
        ({1: "a"}, TypeError, r"config\['x'\] has the key 1 of type int; JSON object keys must be strings"),
        (math.nan, ValueError, r"config\['x'\] is nan, which JSON cannot hold"),
        ([1, math.inf], ValueError, r"config\['x'\]\[1\] is inf"),
    ],
)
def test_a_config_that_is_not_json_is_refused_before_any_run(tmp_path, bad, error, message):
    run, calls = counting(square)
    with pytest.raises(error, match=rf"run 1 of the sweep \({{'x': .*}}\): {message}"):
        run_sweep([{"x": 1}, {"x": bad}], run, tmp_path, workers=1)
    assert calls == [] and files(tmp_path) == []


def test_a_result_that_is_not_json_names_the_run_and_keeps_what_was_written(tmp_path):
    configs = [{"x": x} for x in range(4)]
    bad_key = run_key(run_config(configs[2], tensor_for_two))
    with pytest.raises(TypeError, match=rf"run {bad_key} \(.*'x': 2.*\) returned a result that cannot be stored as JSON: result\['y'\] is a torch.Tensor"):
        run_sweep(configs, tensor_for_two, tmp_path, workers=1)
    assert files(tmp_path) == sorted(f"{run_key(run_config(c, tensor_for_two))}.json" for c in configs[:2])
    with pytest.raises(TypeError, match="the result is a list, not a mapping"):
        run_sweep([{"x": 5}], lambda c: [c["x"]], tmp_path / "list", workers=1)


def test_a_result_may_hold_nan_which_reads_back_as_nan(tmp_path):
    (record,) = run_sweep([{"x": 1}], lambda c: {"se": math.nan}, tmp_path, workers=1)
    assert math.isnan(record["result"]["se"])
    (again,) = run_sweep([{"x": 1}], lambda c: {"se": 0.0}, tmp_path, workers=1)
    assert math.isnan(again["result"]["se"])  # reused: its stored config equals the requested one


# --- permissions ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_are_created_with_the_permissions_the_umask_allows(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        run_sweep([{"x": 1}], square, tmp_path / "runs", workers=1)
        sweep.save_checkpoint(tmp_path / "checkpoints" / "run.pt", {"step": 1})
        results.write_summary(tmp_path / "summary", ["a"], [{"a": 1}])
    finally:
        os.umask(previous)
    written = [*(tmp_path / "runs").iterdir(), tmp_path / "checkpoints" / "run.pt", *(tmp_path / "summary").iterdir()]
    assert len(written) == 4 and {p.stat().st_mode & 0o777 for p in written} == {mode}


# --- failing fast ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", ["locl", "Local", "scheduler-host:8786", "tcp//host:8786", "http://host:8786"])
def test_a_misspelled_scheduler_is_refused_at_once(tmp_path, scheduler):
    started = time.monotonic()
    with pytest.raises(ValueError, match=rf"scheduler must be 'local' \(worker processes on this machine\) or a Dask scheduler address such as 'tcp://host:8786' \(protocol://host:port\), got '{scheduler}'"):
        run_sweep([{"x": 1}], square, tmp_path, scheduler=scheduler)
    assert time.monotonic() - started < 5 and files(tmp_path) == []


SCRIPT = """
from pwgf.experiments.sweep import run_sweep


def square(config):
    return {{"y": config["x"] ** 2}}

{call}
"""


def run_script(folder: Path, call: str) -> subprocess.CompletedProcess:
    (folder / "sweep_script.py").write_text(SCRIPT.format(call=call))
    return subprocess.run([sys.executable, "sweep_script.py"], cwd=folder, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_script_without_a_main_guard_is_told_so_before_workers_start(tmp_path):
    done = run_script(tmp_path, 'print(run_sweep([{"x": 1}, {"x": 2}], square, "out", workers=2)[1]["result"])')
    assert done.returncode != 0 and "Nanny failed to start" not in done.stderr
    assert (f"RuntimeError: run_sweep with local worker processes was called at the top level of the script "
            f"{tmp_path / 'sweep_script.py'} (line 8), outside `if __name__ == \"__main__\":`") in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_guarded_script_passes_the_check(tmp_path):
    """The same check under the guard (the sweep itself, with local workers started from pytest's guarded main, is test_sweep.py's)."""
    done = run_script(tmp_path, 'if __name__ == "__main__":\n    from pwgf.experiments.sweep import _check_main_guard\n    _check_main_guard()\n    print("checked")')
    assert done.returncode == 0 and done.stdout.strip() == "checked", done.stderr


# --- the Dask path ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(2) as started:
        yield started


def test_on_a_cluster_keys_results_and_corrupt_files_behave_as_in_this_process(tmp_path, cluster):
    address = cluster.scheduler_address
    configs = [{"x": 0.0001}, {"x": "0.0001"}, {"x": 3}]
    inline = run_sweep(configs, square, tmp_path / "inline", workers=1)
    records = run_sweep(configs, square, tmp_path / "cluster", scheduler=address)
    assert records == inline and [r["result"]["x_type"] for r in records] == ["float", "str", "int"]
    path = tmp_path / "cluster" / f"{run_key(records[2]['config'])}.json"
    path.write_text(path.read_text()[:20])
    with pytest.warns(CorruptResultWarning, match=f"result file {path} is not valid JSON"):
        assert run_sweep(configs, square, tmp_path / "cluster", scheduler=address) == inline
    assert sorted(files(tmp_path / "cluster")) == sorted([*files(tmp_path / "inline"), f"{path.name}.corrupt"])


def test_on_a_cluster_a_result_that_is_not_json_keeps_what_was_written(tmp_path, cluster):
    configs = [{"x": x} for x in (0, 1, 2)]
    with pytest.raises(TypeError, match=r"returned a result that cannot be stored as JSON: result\['y'\] is a torch.Tensor"):
        run_sweep(configs, tensor_for_two, tmp_path, scheduler=cluster.scheduler_address)
    written = files(tmp_path)
    assert f"{run_key(run_config(configs[2], tensor_for_two))}.json" not in written
    assert all(json.loads((tmp_path / name).read_text())["result"]["y"] in (0.0, 1.0) for name in written)
    records = run_sweep(configs[:2], tensor_for_two, tmp_path, scheduler=cluster.scheduler_address)
    assert [r["result"]["y"] for r in records] == [0.0, 1.0]


def test_a_cluster_worker_with_other_library_code_refuses_the_run(tmp_path, cluster, monkeypatch):
    # The client believes its library code has another version (as after an edit the workers have not seen).
    monkeypatch.setattr(sweep, "code_version", lambda run: "0123456789ab")
    with pytest.raises(RuntimeError, match=r"was made for library code '0123456789ab', but this process runs '[0-9a-f]{12}'"):
        run_sweep([{"x": 1}, {"x": 2}], square, tmp_path, scheduler=cluster.scheduler_address)
    assert files(tmp_path) == []
