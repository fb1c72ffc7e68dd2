"""The sweep engine: resumable atomic sweeps, checkpoints, and runs on a real Dask LocalCluster.

The cluster tests start worker processes on this machine, bound to the loopback interface, and kill
one of them while it holds a run.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import pytest
import torch

from pwgf.experiments import poisson_gan as pg
from pwgf.experiments.results import atomic_write_text, read_json, run_key
from pwgf.experiments.sweep import checkpoint_path, code_version, load_checkpoint, local_cluster, run_config, run_sweep, save_checkpoint

# Workers cannot import this file: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

STEPS, EVERY = 12, 4  # the toy run checkpoints after steps 4, 8 and 12
KILL_TIMEOUT_S = 60.0


class Interrupted(RuntimeError):
    """Raised by the toy run to stand for a run stopped mid-way."""


def toy_train(config, *, checkpoint):
    """A seeded training loop: Adam fits a linear model to random batches; checkpointed every EVERY steps.

    Side channel for the tests, in ``out_dir/attempts`` when that folder exists: every attempt appends
    ``"<pid> <first step>"`` to ``<key>.log``; on a first attempt, after its first checkpoint, the run
    raises if ``<key>.raise`` exists, or writes its pid to ``held`` and waits to be killed if ``<key>.block`` does.
    """
    side = checkpoint.parent.parent / "attempts"
    generator = torch.Generator().manual_seed(config["seed"])
    target = torch.randn(3, 1, generator=generator, dtype=torch.float64)
    weight = torch.zeros(3, 1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([weight], lr=0.1)
    start, losses = 0, []
    state = load_checkpoint(checkpoint)
    if state is not None:
        with torch.no_grad():
            weight.copy_(state["weight"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start, losses = state["step"], state["losses"]
    if side.is_dir():
        with open(side / f"{checkpoint.stem}.log", "a") as log:
            log.write(f"{os.getpid()} {start}\n")
    for step in range(start + 1, STEPS + 1):
        x = torch.randn(8, 3, generator=generator, dtype=torch.float64)
        y = x @ target + 0.1 * torch.randn(8, 1, generator=generator, dtype=torch.float64)
        loss = ((x @ weight - y) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        time.sleep(0.02)
        if step % EVERY == 0:
            save_checkpoint(checkpoint, {"weight": weight.detach(), "optimizer": optimizer.state_dict(),
                                         "generator": generator.get_state(), "step": step, "losses": losses})
            if start == 0 and (side / f"{checkpoint.stem}.raise").exists():
                raise Interrupted(f"stopped after step {step}")
            if start == 0 and (side / f"{checkpoint.stem}.block").exists():
                atomic_write_text(side / "held", str(os.getpid()))
                deadline = time.monotonic() + KILL_TIMEOUT_S
                while time.monotonic() < deadline:
                    time.sleep(0.05)
                raise TimeoutError("the worker holding this run was not killed")
    return {"losses": losses, "weight": weight.detach().flatten().tolist(), "threads": torch.get_num_threads()}


def plain_run(config):
    """A run without checkpoints; raises for ``x == 3``."""
    if config["x"] == 3:
        raise ValueError("x must not be 3")
    return {"y": config["x"] ** 2, "threads": torch.get_num_threads()}


def key(config, run=None) -> str:
    """The run key of ``config`` as the engine stores it (with the code version of ``run``, default the toy run)."""
    return run_key(run_config(config, toy_train if run is None else run))


def attempts(out_dir: Path, config) -> list[tuple[int, int]]:
    """``(pid, first step)`` of every attempt of ``config``'s run, from the toy run's log."""
    lines = (out_dir / "attempts" / f"{key(config)}.log").read_text().split()
    return [(int(pid), int(step)) for pid, step in zip(lines[::2], lines[1::2])]


def assert_clean(out_dir: Path, configs, run=None) -> None:
    """Exactly one whole result file per config, no checkpoint left, no temporary file anywhere."""
    results = sorted(p.name for p in out_dir.glob("*.json"))
    assert results == sorted(f"{key(c, run)}.json" for c in configs)
    assert all(set(read_json(out_dir / name)) == {"config", "result"} for name in results)
    assert [p for p in out_dir.rglob("*") if p.name.startswith(".") or p.suffix in (".pt", ".tmp")] == []


# --- in this process ------------------------------------------------------------------------------


def test_sweep_resumes_without_recomputing(tmp_path, capsys):
    calls = []

    def run(config):
        calls.append(config["x"])
        if config["x"] == 2 and len(calls) == 3:
            raise RuntimeError("interrupted")
        return {"y": config["x"] ** 2}

    configs = [{"x": x} for x in range(4)]
    with pytest.raises(RuntimeError, match="interrupted"):
        run_sweep(configs, run, tmp_path, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{key({'x': x}, run)}.json" for x in (0, 1))
    records = run_sweep(configs, run, tmp_path, workers=1, desc="resumed")
    assert calls == [0, 1, 2, 2, 3]
    assert records == [{"config": {"x": x, "code": code_version(run)}, "result": {"y": x**2}} for x in range(4)]
    bar = capsys.readouterr().err
    assert "resumed:  50%" in bar and "4/4" in bar  # finished runs count from the start


def test_runs_get_one_torch_thread_and_the_count_is_restored(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        records = run_sweep([{"x": 1}], plain_run, tmp_path, workers=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert records[0]["result"]["threads"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"configs": [{"x": 1}, {"x": 1}]}, r"configs must be distinct: runs \[0, 1\] have the same config"),
        ({"workers": 0}, "workers must be an integer >= 1"),
        ({"scheduler": ""}, r"scheduler must be 'local' .* or a Dask scheduler address such as 'tcp://host:8786'"),
        ({"scheduler": None}, r"scheduler must be 'local' .* or a Dask scheduler address such as 'tcp://host:8786'"),
    ],
)
def test_bad_arguments_are_rejected_before_any_run(tmp_path, kwargs, message):
    arguments = {"configs": [{"x": 1}], "run": plain_run, "out_dir": tmp_path, **kwargs}
    with pytest.raises(ValueError, match=message):
        run_sweep(**arguments)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_round_trip_is_atomic(tmp_path):
    path = tmp_path / "checkpoints" / "run.pt"
    assert load_checkpoint(path) is None
    generator = torch.Generator().manual_seed(7)
    state = {"step": 3, "generator": generator.get_state(), "history": [0.5, 0.25], "note": None}
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and loaded["history"] == [0.5, 0.25] and loaded["note"] is None
    assert torch.equal(torch.Generator().set_state(loaded["generator"]).get_state(), generator.get_state())
    with pytest.raises((AttributeError, pickle.PicklingError), match="Can't pickle local object|Can't get local object"):
        save_checkpoint(path, {"step": 4, "bad": lambda: None})  # not picklable: the old checkpoint stays
    assert load_checkpoint(path)["step"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["run.pt"]


def test_interrupted_run_resumes_from_its_checkpoint_to_the_same_numbers(tmp_path):
    configs = [{"seed": s} for s in range(3)]
    reference = run_sweep(configs, toy_train, tmp_path / "reference", workers=1, checkpoints=True)
    out_dir = tmp_path / "interrupted"
    (out_dir / "attempts").mkdir(parents=True)
    (out_dir / "attempts" / f"{key(configs[1])}.raise").touch()
    with pytest.raises(Interrupted, match="after step 4"):
        run_sweep(configs, toy_train, out_dir, workers=1, checkpoints=True)
    assert load_checkpoint(checkpoint_path(out_dir, run_config(configs[1], toy_train)))["step"] == 4
    records = run_sweep(configs, toy_train, out_dir, workers=1, checkpoints=True)
    assert records == reference  # bit for bit, though run 1 restarted at step 4
    assert [step for _, step in attempts(out_dir, configs[1])] == [0, 4]
    assert [step for _, step in attempts(out_dir, configs[2])] == [0]  # run 2 never started before the interruption
    (out_dir / "attempts" / f"{key(configs[1])}.raise").unlink()
    assert_clean(out_dir, configs)
    assert_clean(tmp_path / "reference", configs)


# --- on Dask clusters of worker processes on this machine ------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    """LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1", dashboard_address=None)."""
    with local_cluster(2) as started:
        yield started


def tiny_poisson_configs():
    base = {"n_data": 50, "epochs": 3, "iters": 2, "batch": 8, "lr_d": 0.01, "width": 4, "loss": "paper",
            "lambda_init_ratio": 2.0, "var_reps": 3}
    setting = {"lr_g": 0.1, "eps": 0.1, "bw": 1.0}
    return [pg._config(base, name, 5.0, seed, setting) for name in ("st", "reinforce") for seed in (0, 1)]


def test_results_do_not_depend_on_the_executor(tmp_path, cluster):
    addresses = [cluster.scheduler_address, *cluster.scheduler_info["workers"]]
    assert len(addresses) == 3 and all(a.startswith("tcp://127.0.0.1:") for a in addresses)  # loopback only
    configs = tiny_poisson_configs()
    runs = {
        "in this process": run_sweep(configs, pg.train, tmp_path / "inline", workers=1),
        "local worker processes": run_sweep(configs, pg.train, tmp_path / "local", workers=2),
        "cluster": run_sweep(configs, pg.train, tmp_path / "cluster", scheduler=cluster.scheduler_address),
    }
    for records in runs.values():
        for record in records:
            assert record["result"].pop("seconds") > 0  # compute time, the one field that may differ
    assert runs["local worker processes"] == runs["in this process"]
    assert runs["cluster"] == runs["in this process"]


def test_a_failing_run_on_the_cluster_stops_the_sweep_and_keeps_finished_results(tmp_path, cluster):
    configs = [{"x": x} for x in range(5)]
    with pytest.raises(ValueError, match="x must not be 3"):
        run_sweep(configs, plain_run, tmp_path, scheduler=cluster.scheduler_address)
    assert f"{key({'x': 3}, plain_run)}.json" not in {p.name for p in tmp_path.iterdir()}
    records = run_sweep(configs[:3] + configs[4:], plain_run, tmp_path, scheduler=cluster.scheduler_address)
    assert [r["result"] for r in records] == [{"y": x**2, "threads": 1} for x in (0, 1, 2, 4)]


def test_a_killed_worker_costs_only_its_run_which_resumes_from_its_checkpoint(tmp_path, cluster):
    configs = [{"seed": s} for s in range(4)]
    victim = configs[1]
    reference = run_sweep(configs, toy_train, tmp_path / "reference", workers=1, checkpoints=True)
    out_dir = tmp_path / "cluster"
    (out_dir / "attempts").mkdir(parents=True)
    (out_dir / "attempts" / f"{key(victim)}.block").touch()
    held = out_dir / "attempts" / "held"
    killed = []

    def kill_the_worker_holding_the_victim():
        deadline = time.monotonic() + KILL_TIMEOUT_S
        while not held.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if held.exists():
            killed.append(int(held.read_text()))
            os.kill(killed[0], signal.SIGKILL)

    killer = threading.Thread(target=kill_the_worker_holding_the_victim)
    killer.start()
    try:
        records = run_sweep(configs, toy_train, out_dir, scheduler=cluster.scheduler_address, checkpoints=True)
    finally:
        killer.join()
    assert records == reference
    first, *retries = attempts(out_dir, victim)
    assert first == (killed[0], 0)
    assert [step for _, step in retries] == [EVERY]  # retried once, from its checkpoint
    assert retries[0][0] != killed[0]  # in another process
    for name in ("held", f"{key(victim)}.block"):
        (out_dir / "attempts" / name).unlink()
    assert_clean(out_dir, configs)


def test_benchmark_harness_records_every_mode():
    from pwgf.experiments import bench_sweep

    with pytest.raises(ValueError, match="multiples of workers"):
        bench_sweep.run((0.01,), (3,), workers=2)
    with pytest.raises(ValueError, match="one count per duration"):
        bench_sweep.run((0.01, 0.1), (2,), workers=1)
    record = bench_sweep.run((0.02,), (2,), workers=1)
    rows = {row["mode"]: row for row in record["rows"]}
    assert list(rows) == ["direct", "in-process", "local", "cluster"]
    direct = rows["direct"]["wall_s"]
    assert direct >= 2 * 0.02 and rows["direct"]["overhead_per_run_s"] == 0
    for row in rows.values():
        assert row["overhead_per_run_s"] == pytest.approx((row["wall_s"] * row["workers"] - direct) / 2, rel=1e-12)
    assert rows["local"]["startup_s"] > 0 and record["goal"]["run_s"] == 0.02
