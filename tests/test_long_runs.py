"""Table 2 at convergence: the parameter file, the sweep and its manifest, and the replay that guards the committed runs (pwgf.experiments.long_runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pwgf.experiments import long_runs, results, vae_objective
from pwgf.experiments import vae_training as vt

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pinned(monkeypatch):
    for name, value in vt.NUMERICS_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)


def small_parameters(tmp_path: Path) -> Path:
    params = long_runs.read_parameters(ROOT / long_runs.PARAMETERS)
    params.update(archs=["linear", "two_layer"], estimator_names=["st", "relax"], n_seeds=2, steps=6, eval_every=2, checkpoint_every=2,
                  workers=1, output_dir=str(tmp_path / "long"))
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_the_parameter_file_is_the_protocol_the_book_states():
    params = long_runs.read_parameters(ROOT / long_runs.PARAMETERS)
    configs = long_runs.configs(params)
    n = len(params["archs"]) * len(params["estimator_names"]) * params["n_seeds"]
    assert len(configs) == n and len({results.run_key(c) for c in configs}) == n
    assert {"pwgf_mmd", "pwgf_mmd_argmin", "st", "arm", "relax", "rebar", "gumbel_softmax"} <= set(params["estimator_names"])
    assert {c["lr"] for c in configs} == {params["lr"]}  # one learning rate for every estimator
    assert {c["batch"] for c in configs} == {50} and {c["until"] for c in configs} == {"converged"}
    for c in configs:  # one setting of each knob
        assert {key: c[key] for key in vae_objective.KNOBS.get(c["estimator"], {})} == \
            {key: params[{"temp": "temperature", "eps": "eps", "bw": "bandwidth"}[key]] for key in vae_objective.KNOBS.get(c["estimator"], {})}
    assert params["output_dir"] == long_runs.FOLDER


def test_a_parameter_file_with_an_unknown_or_missing_key_is_refused(tmp_path):
    params = long_runs.read_parameters(ROOT / long_runs.PARAMETERS)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({**params, "lr_grid": [0.1]}))
    with pytest.raises(ValueError, match=r"unknown \['lr_grid'\]"):
        long_runs.read_parameters(path)
    del params["lr"]
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=r"missing \['lr'\]"):
        long_runs.read_parameters(path)


def test_runs_resume_record_a_manifest_and_replay_bit_for_bit(tmp_path, pinned):
    path = small_parameters(tmp_path)
    records = long_runs.run(path)
    folder = tmp_path / "long"
    manifest = results.read_json(folder / long_runs.MANIFEST)
    assert manifest["runs"] == len(records) == 8 and manifest["code"] == vt.code_version() and manifest["command"] == long_runs.COMMAND
    assert manifest["invocations"][0]["numerics"]["mkl_cbwr"] == "AVX2,STRICT" and manifest["invocations"][0]["machine"]["logical_cores"]
    long_runs.run(path)  # a second invocation computes nothing and is recorded
    assert len(results.read_json(folder / long_runs.MANIFEST)["invocations"]) == 2
    summary = long_runs.summary(folder)
    assert len(summary["rows"]) == 8 and summary["settings"]["lr"] == 1e-3
    report = long_runs.verify(folder, 6)
    assert [(r["arch"], r["estimator"], r["seed"]) for r in report["runs"]] == \
        [("linear", "relax", 0), ("linear", "st", 0), ("two_layer", "relax", 0), ("two_layer", "st", 0)]
    assert all(r["digest_compared"] and r["evaluations"] == 4 for r in report["runs"])
    assert not any(r["digest_compared"] for r in long_runs.verify(folder, 3)["runs"])


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda res: res["trace"].__setitem__(4, res["trace"][4] + 1e-9), r"training -ELBO of step 5 is .*, recorded"),
        (lambda res: res["history"][2].__setitem__("valid_neg_elbo", 1.0), r"valid_neg_elbo at step 4 is .*, recorded 1.0"),
        (lambda res: res.__setitem__("trace_digest", "0" * 64), r"the parameters after step 6 differ"),
    ],
)
def test_a_committed_run_that_todays_code_does_not_reproduce_fails_naming_it_and_the_recompute_command(tmp_path, pinned, tamper, message):
    long_runs.run(small_parameters(tmp_path))
    folder = tmp_path / "long"
    target = next(r for r in long_runs.replay_targets(long_runs.load_records(folder)) if r["config"]["estimator"] == "relax")
    record = results.read_json(folder / "runs" / target["file"])
    tamper(record["result"])
    results.atomic_write_json(folder / "runs" / target["file"], record)
    with pytest.raises(long_runs.ReplayMismatch, match=message) as caught:
        long_runs.verify(folder, 6)
    assert target["file"] in str(caught.value) and f"`{long_runs.COMMAND}`" in str(caught.value) and "relax on linear, seed 0" in str(caught.value)


def test_replay_refuses_to_run_without_the_pinned_numerics(tmp_path, monkeypatch):
    monkeypatch.delenv("MKL_CBWR", raising=False)
    with pytest.raises(RuntimeError, match="MKL_CBWR"):
        long_runs.verify(tmp_path, 5)


def test_the_command_line_reports_a_mismatch_and_exits_1(tmp_path, pinned, capsys):
    long_runs.run(small_parameters(tmp_path))
    folder = tmp_path / "long"
    assert long_runs._main(["verify", str(folder), "--steps", "2", "--report", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["steps"] == 2
    path = next((folder / "runs").glob("*.json"))
    record = results.read_json(path)
    record["result"]["trace"][0] += 1.0
    results.atomic_write_json(path, record)
    assert long_runs._main(["verify", str(folder), "--steps", "2"]) == 1
    assert "replay failed" in capsys.readouterr().err


def test_the_committed_folder_is_found_from_inside_the_repository(tmp_path):
    assert long_runs.committed_folder(ROOT / "book") == ROOT / long_runs.FOLDER
    with pytest.raises(FileNotFoundError, match="_toc.yml"):
        long_runs.committed_folder(tmp_path)


def test_the_committed_runs_are_the_runs_of_the_parameter_file():
    folder = long_runs.committed_folder(ROOT)
    params = long_runs.read_parameters(ROOT / long_runs.PARAMETERS)
    records = long_runs.load_records(folder)
    manifest = results.read_json(folder / long_runs.MANIFEST)
    assert manifest["parameters"] == params and manifest["runs"] == len(records)
    expected = sorted(results.canonical_json({k: v for k, v in c.items() if k != "code"}) for c in long_runs.configs(params))
    committed = sorted(results.canonical_json({k: v for k, v in r["config"].items() if k != "code"}) for r in records)
    assert committed == expected
    assert {r["config"]["code"] for r in records} == {manifest["code"]}  # one code version made them all
    assert all(r["result"]["numerics"]["cpu_capability"] == "AVX2" for r in records)
