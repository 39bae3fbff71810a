"""The arithmetic of the benchmarks' overhead part (benchmarks/run.py): the
unit costs taken from a play's task records, and one migration split with
them. Pure functions over made-up records; the benchmark itself runs with
`make bench`."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("ckpt_bench_run", REPO / "benchmarks" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(bench, rep, scale=1.0, rc=0):
    tasks = {"raw true": [0.05] * 5, "raw python3": [0.08] * 5, "no module": [0.03, 0.04, 0.03],
             "again ansible.builtin.ping": [0.4] * 3, "async ckpt.criu.restore": [0.9, 1.0, 0.8],
             "async_status of it": [0.5] * 3}
    for i, mod in enumerate(bench.MIGRATE_MODULES):
        warm = (0.4 + 0.01 * i) * scale
        tasks["first %s" % mod] = [warm + 0.3]
        tasks["again %s" % mod] = [warm, warm + 0.1, warm - 0.1]
    return {"rep": rep, "rc": rc, "wall": 30.0, "start_end_s": 1.5 * scale, "tasks": tasks}


def test_summary_takes_medians_per_run_then_over_runs(bench):
    runs = [_run(bench, 1), _run(bench, 2, scale=1.2), _run(bench, 3, scale=5.0, rc=2)]
    s = bench.summarize_overhead(runs)
    assert s["failed_runs"] == 1
    assert s["start_end"] == {"median": 1.65, "min": 1.5, "max": 1.8, "n": 2}
    assert s["no_module"]["median"] == 0.03 and s["async_launch"]["median"] == 0.9
    host_checks = s["modules"]["ckpt.criu.host_checks"]
    assert host_checks["warm"]["min"] == 0.4 and host_checks["warm"]["max"] == 0.48
    assert host_checks["build"]["median"] == 0.3
    assert s["builds_total"]["median"] == pytest.approx(0.3 * len(bench.MIGRATE_MODULES))


def test_one_migration_split_with_the_unit_costs(bench):
    s = bench.summarize_overhead([_run(bench, 1)])
    one = {"wall": 20.0, "small_tasks": 100,
           "actions": {"ckpt.criu.dump": 1, "ckpt.criu.migration_key": 2, "async": 1, "ckpt.criu.restore": 1}}
    m = bench.overhead_model(s, one)
    parts = m["parts"]
    warm = {mod: 0.4 + 0.01 * i for i, mod in enumerate(bench.MIGRATE_MODULES)}
    runs = warm["ckpt.criu.dump"] + 2 * warm["ckpt.criu.migration_key"] + warm["ckpt.criu.restore"]
    assert parts["module runs, warm (payload sent, Python, imports): 4"] == pytest.approx(runs, abs=0.01)
    assert parts["payloads built on the controller, once per module and run: 3"] == pytest.approx(0.9)
    assert parts["tasks that run no module (includes, facts, asserts, skipped tasks): 100"] == pytest.approx(3.0)
    assert parts["async starts, above a warm run: 1"] == pytest.approx(0.9 - warm["ckpt.criu.restore"], abs=0.01)
    assert m["ansible_s"] == pytest.approx(sum(parts.values()), abs=0.02)
    assert m["rest_s"] == pytest.approx(20.0 - m["ansible_s"], abs=0.02)


def test_no_split_without_counts(bench):
    s = bench.summarize_overhead([_run(bench, 1)])
    assert bench.overhead_model(s, {"wall": 20.0, "small_tasks": 3}) is None
    assert bench.overhead_model(None, {"wall": 20.0, "actions": {"ckpt.criu.dump": 1}}) is None
