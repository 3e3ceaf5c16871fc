"""One run over several processes (DDP, gloo on the CPU): each step's samples, the sharded evaluation
and the whole pipeline under torchrun, against one process.

What must be equal and what may differ:
- evaluation (``predict``) and so the per-sample loss pass, τ and the FLOW weights: bit for bit (each
  process runs whole batches of the one-process batch sequence; results gathered by index);
- training with BatchNorm frozen: within 1e-6 (the processes see the halves of each one-process batch
  and DDP averages their gradients: the same step up to float summation order);
- training with BatchNorm in train mode (every real run): each process normalises its half batch by its
  own statistics, and the running statistics follow rank 0's halves, so the models differ; on the
  tiny run below target and source accuracy stay within 0.1 (6 of 64 images; 1 and 2 images measured)
  and every epoch's cross-entropy within 15 % (5 % measured).
"""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowvision.data.base import make_loader, step_share
from flowvision.data.synthetic import load_synthetic_task

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", FLOWVISION_QUIET="1",
               FLOWVISION_OFFLINE="1", FLOWVISION_DIST_TIMEOUT_S="300")
    return dict(env, **extra)


@pytest.mark.parametrize("n, batch, procs", [(42, 16, 2), (41, 16, 2), (50, 12, 3), (3, 4, 4)])
def test_each_step_is_one_process_step_split_between_the_processes(n, batch, procs):
    data = load_synthetic_task("gratings", image_size=8, n_train=n, n_test=4, augment=False).train_eval
    single = [b[2].tolist() for b in make_loader(data, batch, shuffle=True, seed=7 * 100_003 + 1)]
    shares = []
    for rank in range(procs):
        sampler = step_share(data, batch, procs, rank, 7 * 100_003)
        sampler.set_epoch(1)  # seed + epoch: the one-process loader's seed for epoch 1
        shares.append([b[2].tolist() for b in make_loader(data, batch // procs, sampler=sampler)])
    assert all(len(s) == len(single) for s in shares)  # every process takes the same number of steps
    first = [i for b in single for i in b]
    for step, one in enumerate(single):
        together = [i for s in shares for i in s[step]]
        padded = together[len(one):]  # only the last step may be padded, with the epoch's first samples
        assert together[:len(one)] == one
        assert len(padded) < procs and (not padded or step == len(single) - 1)
        assert padded == first[:len(padded)]
    assert len({len(s[-1]) for s in shares}) == 1  # equal shares: DDP's gradient average is the batch mean


# ---- two processes in this machine (torch.multiprocessing, gloo) ---------------------------------------------
def _worker(rank, init, out):
    import torch.distributed as dist

    from flowvision.core import distributed
    from flowvision.methods.evaluate import predict
    from flowvision.methods.train import train

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    task, net = _setup()
    with distributed.session("cpu"):
        result = {"predict": predict(net, task.test, batch_size=7, keep_logprobs=True)}
        for name, sched in _SCHEDULES.items():
            m = copy.deepcopy(net)
            result[name] = (train(m, task.train, sched, seed=5), m.state_dict())
    if rank == 0:
        torch.save(result, out)
    dist.destroy_process_group()


def _setup():
    from flowvision.methods import models

    task = load_synthetic_task("gratings", image_size=16, n_train=42, n_test=32, augment=False)
    torch.manual_seed(0)
    return task, models.create("resnet18", 8)


def _schedules():
    from flowvision.methods.train import Schedule

    return {"head": Schedule(2, 0.05, 16, head_only=True, bn_train=False),
            "all": Schedule(2, 0.05, 16, bn_train=False)}


_SCHEDULES = _schedules()


@pytest.mark.slow  # ~15 s on 2 cores: two spawned processes import torch and timm, then train
def test_two_processes_evaluate_exactly_and_train_as_one_with_batchnorm_frozen(tmp_path):
    import torch.multiprocessing as mp

    from flowvision.methods.evaluate import predict
    from flowvision.methods.train import train

    mp.spawn(_worker, args=(f"file://{tmp_path}/rendezvous", str(tmp_path / "out.pt")), nprocs=2)
    two = torch.load(tmp_path / "out.pt", weights_only=False)
    task, net = _setup()
    one = predict(net, task.test, batch_size=7, keep_logprobs=True)  # 5 batches: 3 on rank 0, 2 on rank 1
    for field in ("losses", "labels", "correct", "correct5", "logprobs"):
        assert torch.equal(getattr(one, field), getattr(two["predict"], field)), field
    for name, sched in _SCHEDULES.items():
        m = copy.deepcopy(net)
        rows = train(m, task.train, sched, seed=5)
        rows2, state2 = two[name]
        assert [r["epoch"] for r in rows2] == [1, 2]
        for r1, r2 in zip(rows, rows2):
            assert r2["ce"] == pytest.approx(r1["ce"], abs=1e-5) and r2["acc"] == r1["acc"]
        moved = max((v.float() - net.state_dict()[k].float()).abs().max() for k, v in m.state_dict().items())
        diff = max((v.float() - state2[k].float()).abs().max() for k, v in m.state_dict().items())
        assert moved > 1e-2 and diff < 1e-6, (name, float(moved), float(diff))


# ---- the whole pipeline under torchrun -------------------------------------------------------------------------
TINY = {"image_size": 16, "n_train": 96, "n_test": 64, "demo_n_train": 96, "demo_n_test": 64, "demo_epochs": 1, "demo_batch_size": 32,
        "demo_arch": "test_resnet",
        "epochs": 2, "probe_epochs": 1, "refit_epochs": 1, "batch_size": 32, "augment": False}


def _finetune_args(results, cache, **changes):
    args = ["finetune", "--model", "demo", "--dataset", "gratings", "--device", "cpu",
            "--results-dir", str(results), "--cache-dir", str(cache)]
    return args + [a for k, v in dict(TINY, **changes).items() for a in ("--set", f"{k}={v}")]


@pytest.mark.slow  # ~17 s on 2 cores: one run here, then torchrun with 2 processes
def test_torchrun_two_processes_give_the_same_tau_and_weights_and_close_metrics(tmp_path, demo_cache):
    from flowvision.core import config
    from flowvision.core.files import load_checked
    from flowvision.stages.run import run

    one = run(config.resolve("gratings", "demo", "flow", dict(TINY, device="cpu", cache_dir=str(demo_cache),
                                                              results_dir=str(tmp_path / "one"))))
    # the probe (trained in one process) is shared, as between any two runs: what follows it runs on 2 processes
    store_one, store_two = tmp_path / "one" / "cache" / "v2", tmp_path / "two" / "cache" / "v2"
    store_two.mkdir(parents=True)
    probe = next(store_one.glob("probe-*.pt"))
    (store_two / probe.name).write_bytes(probe.read_bytes())
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "flowvision", *_finetune_args(tmp_path / "two", demo_cache)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run folder") == 1  # rank 0 alone prints the result
    run_dir = Path(one["run_dir"]).name
    two = json.loads((tmp_path / "two" / "runs" / run_dir / "result.json").read_text())
    assert two["device"] == "cpu × 2 processes (DDP)"
    assert two["stages"]["probe"] == "cached" and all(two["stages"][s] == "computed" for s in
                                                      ("losses", "finetune", "refit", "target_eval", "forgetting"))
    # the loss pass (Algorithm 1), τ and the weights: exactly those of one process
    assert two["tau"] == one["tau"]
    assert ((tmp_path / "two" / "runs" / run_dir / "weights.csv").read_bytes()
            == (tmp_path / "one" / "runs" / run_dir / "weights.csv").read_bytes())
    for stage in ("losses", "source_eval"):
        a, b = (load_checked(next(s.glob(f"{stage}-*.pt")), {}) for s in (store_one, store_two))
        assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor)), stage
    assert two["source_acc_before"] == one["source_acc_before"]
    # trained with BatchNorm statistics of half batches: close, not equal
    for key in ("target_acc", "source_acc_after", "source_agreement"):
        assert abs(two[key] - one[key]) <= 0.1, (key, one[key], two[key])
    rows = [[line.split(",") for line in (tmp_path / d / "runs" / run_dir / "summary.csv").read_text().splitlines()[1:]]
            for d in ("one", "two")]
    assert [r[:2] for r in rows[0]] == [r[:2] for r in rows[1]]
    for r1, r2 in zip(*rows):
        assert abs(float(r2[3]) - float(r1[3])) <= 0.15 * float(r1[3]), (r1, r2)
    # rank 1 wrote nothing: no second run folder, no temporary or stray files
    assert [p.name for p in (tmp_path / "two" / "runs").iterdir()] == [run_dir]
    assert not list((tmp_path / "two").rglob("*.tmp"))


# ---- one-line errors -------------------------------------------------------------------------------------------
def test_a_batch_that_does_not_split_over_the_processes_is_one_line(tmp_path, demo_cache):
    proc = subprocess.run([sys.executable, "-m", "flowvision", *_finetune_args(tmp_path, demo_cache, batch_size=16)],
                          cwd=ROOT, env=_env(WORLD_SIZE="3", RANK="0", LOCAL_RANK="0"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: batch_size 16 does not split over 3 processes; the batch size is the global batch (each process "
        "takes batch_size / 3): use a multiple of 3"]
    assert not (tmp_path / "runs").exists()


def test_commands_other_than_finetune_refuse_torchrun(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flowvision", "reproduce", "--model", "demo", "--datasets", "demo"],
                          cwd=ROOT, env=_env(WORLD_SIZE="2", RANK="0"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: `flowvision reproduce` runs in one process")
