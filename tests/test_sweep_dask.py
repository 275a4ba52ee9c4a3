"""Sweeps on Dask: 2 worker processes give the serial numbers exactly, without per-point
recompilation, and a worker killed mid-sweep costs nothing but time."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

pytest.importorskip("distributed", reason="the sweep extra (dask[distributed]) is part of effdyn[all]")

from effdyn.sweep import BLAS_ENV, local_cluster, run_sweep  # noqa: E402

from test_sweep import _numbers, tiny  # noqa: E402

pytestmark = pytest.mark.xdist_group("sweep")


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    res = run_sweep(tiny(), tmp_path_factory.mktemp("serial"), serial=True, log=None)
    assert res.computed == 8 and res.failed == 0
    return res.dataset


def test_two_workers_equal_serial_number_for_number(serial, tmp_path):
    res = run_sweep(tiny(), tmp_path, n_workers=2, log=None)
    ds = res.dataset
    assert res.n_workers == 2 and res.computed == 8 and res.missing == 0 and res.failed == 0
    assert res.scheduler.startswith("tcp://")
    ref = _numbers(serial)
    got = _numbers(ds)
    assert set(got) == set(ref)
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    # both worker processes ran points; the numba kernels were loaded once per process
    assert ds.sizes["worker"] == 2 and sorted(ds["worker_points"].values.tolist()) != [0, 8]
    assert ds["worker_compiles_first_point"].values.min() > 0
    assert ds["worker_compiles_later_points"].values.tolist() == [0, 0]


def test_killed_worker_point_is_rerun_elsewhere(serial, tmp_path):
    from distributed import Client

    cluster = local_cluster(2)
    client = Client(cluster)
    try:
        pids = client.run(os.getpid)
        envs = client.run(lambda: {k: os.environ.get(k) for k in BLAS_ENV})
        assert all(e == BLAS_ENV for e in envs.values())  # one BLAS/OpenMP/numba thread per worker
        killed = {}

        def kill_one(state):
            if killed or state["running"] == 0:
                return
            for address, keys in client.processing().items():
                if keys and address in pids:
                    killed.update(pid=pids[address], keys=list(keys))
                    os.kill(pids[address], signal.SIGKILL)  # a worker process this test started
                    return

        res = run_sweep(tiny(), tmp_path, client=client, log=None, callback=kill_one)
    finally:
        client.close()
        cluster.close()
    assert killed, "no worker was killed: the sweep never reported a running point"
    ds = res.dataset
    assert res.computed == 8 and res.missing == 0 and res.failed == 0
    assert np.all(ds["point_status"].values == "ok")
    # the point that was running on the killed worker was run again by another process
    lost = {k.split("-")[2] for k in killed["keys"]}
    for key in lost:
        where = ds["point_worker"].values[ds["point_key"].values == key]
        assert len(where) == 1 and f":{killed['pid']}@" not in where[0]
    assert all(f":{killed['pid']}@" not in w for w in ds["point_worker"].values.ravel())
    ref = _numbers(serial)
    for name, values in _numbers(ds).items():
        np.testing.assert_array_equal(values, ref[name], err_msg=name)


def test_lost_scheduler_saves_what_was_done_and_the_same_command_resumes(serial, tmp_path):
    from distributed import Client

    from effdyn.sweep import SweepInterrupted

    cluster = local_cluster(1)
    client = Client(cluster)

    def lose_scheduler(state):
        if state["done"] == 2 and cluster.status.name == "running":
            cluster.close()  # the scheduler (and its worker) go away mid-sweep

    try:
        with pytest.raises(SweepInterrupted) as info:
            run_sweep(tiny(), tmp_path, client=client, log=None, callback=lose_scheduler)
    finally:
        client.close()
        cluster.close()
    part = info.value.result
    assert part.computed == 2 and part.missing == 6 and "scheduler" in info.value.why
    res = run_sweep(tiny(), tmp_path, serial=True, log=None)
    assert (res.reused, res.computed, res.missing) == (2, 6, 0)
    for name, values in _numbers(res.dataset).items():
        np.testing.assert_array_equal(values, _numbers(serial)[name], err_msg=name)
