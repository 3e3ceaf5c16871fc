"""Where a grid's cells run: worker processes on this machine (one per GPU or CPU slot), or Slurm jobs
through submitit. What the grid is and in which order its cells go comes from grid.py.

    flowvision reproduce --model resnet18 --gpus 0,1,2,3               # one worker per GPU
    flowvision reproduce --model demo --datasets demo --jobs 2         # CPU-only: two workers
    flowvision reproduce --model resnet50 --launcher slurm --partition gpu --time 12:00:00 --gpus-per-job 1

Every worker shares the results folder, and so the stage store and its per-stage locks: a stage two
cells share is computed by one of them and loaded by the other. The local launcher goes further and
starts a cell only when no running cell is still computing a stage it shares (it reads the running
cells' state files), so no worker sits on a lock while another cell could use the slot. On Slurm,
cells that share a stage form one array task, run in order in one job, and groups that share nothing
run in parallel; a preempted task is requeued and resumes (finished cells are skipped, a cut
fine-tuning resumes from its last epoch).
"""
from __future__ import annotations

import base64
import json
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Optional

import submitit

from ..core.console import console
from ..core.distributed import usable_cores
from ..core.errors import UserError
from .grid import groups, order, stored_keys, todo


def run_cell(cfg) -> Optional[str]:
    """One cell in this process -> None, or the one-line reason it failed. A bug's traceback goes to
    this process's log; the grid goes on with the other cells."""
    from ..stages.run import run

    try:
        run(cfg)
        return None
    except UserError as e:
        return str(e)
    except Exception as e:  # a bug: the traceback is in the worker's log, the launcher reports the line
        traceback.print_exc()
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (traceback in the log)"


# ---- local workers -----------------------------------------------------------------------------------
def slots(jobs: int, gpus: Optional[str]) -> list[Optional[str]]:
    """--gpus 0,1 | all -> one slot per GPU (its CUDA_VISIBLE_DEVICES value); else ``jobs`` CPU slots (None)."""
    if not gpus:
        return [None] * jobs
    if gpus.strip() == "all":
        import torch

        n = torch.cuda.device_count()
        if n == 0:
            raise UserError("--gpus all: no CUDA GPU is visible here; use --jobs N for CPU workers")
        return [str(i) for i in range(n)]
    ids = [g.strip() for g in gpus.split(",") if g.strip()]
    if not ids or not all(g.isdigit() for g in ids) or len(set(ids)) != len(ids):
        raise UserError(f"--gpus {gpus}: give GPU numbers separated by commas (e.g. 0,1,2,3) or 'all'")
    return ids


def _encode(obj) -> str:
    return base64.b64encode(pickle.dumps(obj)).decode()


class _Worker:
    """One worker process (``python -m flowvision.scale.launch``): cells in on stdin, one JSON line per
    finished cell out on stdout; its log (progress, warnings, tracebacks) goes to ``log``."""

    def __init__(self, slot: str, gpu: Optional[str], threads: int, log: Path, inbox: queue.Queue,
                 force_threads: bool = False):
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        if force_threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        else:
            env.setdefault("OMP_NUM_THREADS", str(threads))
        here = str(Path(__file__).resolve().parents[2])  # this checkout, also when it is not installed
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
        log.parent.mkdir(parents=True, exist_ok=True)
        self.slot, self.log = slot, log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "flowvision.scale.launch"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err, env=env, text=True, bufsize=1)
        threading.Thread(target=self._read, args=(inbox,), daemon=True).start()

    def _read(self, inbox: queue.Queue) -> None:
        for line in self.proc.stdout:
            inbox.put((self.slot, json.loads(line)))
        self.proc.wait()
        inbox.put((self.slot, None))  # the process ended

    def send(self, i: int, cfg) -> None:
        self.proc.stdin.write(json.dumps({"i": i, "cfg": _encode(cfg)}) + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait()


def worker_main() -> None:
    """The worker's loop; stdout carries only the JSON answers (anything printed goes to the log)."""
    from ..stages import run  # noqa: F401 (torch and timm load now, while the first cell is on its way)

    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        msg = json.loads(line)
        cfg = pickle.loads(base64.b64decode(msg["cfg"]))
        answers.write(json.dumps({"i": msg["i"], "error": run_cell(cfg)}) + "\n")


def _label(cfg) -> str:
    from ..core.identity import run_id

    return run_id(cfg)


def _done_stages(cfg, keys: dict) -> set:
    """The (stage, key) pairs a running cell has finished, from its state file."""
    from ..core.identity import run_id
    from ..stages.runfolder import read_state

    state = read_state(Path(cfg.results_dir) / "runs" / run_id(cfg)) or {}
    return {(n, keys[n]) for n in state.get("done", []) if n in keys}


def _mark_waiting(cfg) -> None:
    from ..core.identity import run_id
    from ..stages.runfolder import read_state
    from ..stages.runstate import RunState

    run_dir = Path(cfg.results_dir) / "runs" / run_id(cfg)
    if (read_state(run_dir) or {}).get("status") != "running":
        RunState(run_dir, cfg).write(status="waiting")


def _mark_failed(cfg, error: str) -> None:
    """A worker died with this cell: its state file says so (the worker could not)."""
    from ..core.files import atomic_write_json
    from ..core.identity import run_id
    from ..stages.runfolder import read_state

    run_dir = Path(cfg.results_dir) / "runs" / run_id(cfg)
    state = read_state(run_dir)
    if state is not None and state.get("status") == "running":
        atomic_write_json(run_dir / "state.json", dict(state, status="failed", error=error, updated=time.time()))


def local(cells: list, slot_gpus: list[Optional[str]], log_dir: Path, poll_s: float = 0.3,
          threads: Optional[int] = None) -> dict:
    """Run the unfinished cells on one worker per slot; -> the summary ``grid.reproduce`` returns.
    Each worker gets ``threads`` torch threads when given (whatever OMP_NUM_THREADS says), else
    OMP_NUM_THREADS or an equal share of the cores.

    A cell starts when a slot is free and every stage it shares with a running cell is already on
    disk; among those, cells that share the most go first (``grid.order``). A worker that dies takes
    only its cell with it: the cell is reported failed (running the grid again resumes it) and a
    fresh worker takes the slot."""
    left = todo(cells)
    summary = {"cells": len(cells), "skipped": len(cells) - len(left), "ran": 0, "failed": [], "seconds": 0.0}
    keys = [stored_keys(cfg) for cfg, _ in left]
    pending = order(left, keys)
    for cfg, _ in left:
        _mark_waiting(cfg)
    names = [f"gpu{g}" if g is not None else f"cpu{n}" for n, g in enumerate(slot_gpus)]
    forced, threads = threads is not None, threads or max(1, usable_cores() // len(slot_gpus))
    inbox: queue.Queue = queue.Queue()
    workers: dict[str, _Worker] = {}
    running: dict[str, tuple[int, float]] = {}  # slot -> (cell, start time)
    t0 = time.time()
    for slot, gpu in list(zip(names, slot_gpus))[:len(pending)]:  # their imports overlap the first cells' work
        workers[slot] = _Worker(slot, gpu, threads, log_dir / f"local-{slot}.log", inbox, forced)

    def ready(i: int, done: dict) -> bool:
        for j, _ in running.values():
            shared = set(keys[i].items()) & set(keys[j].items())
            if shared and not shared <= done.get(j, set()):  # just started: nothing done yet
                return False
        return True

    try:
        while pending or running:
            done = {j: _done_stages(left[j][0], keys[j]) for j, _ in running.values()} if pending else {}
            for slot, gpu in zip(names, slot_gpus):
                if slot in running or not pending:
                    continue
                i = next((i for i in pending if ready(i, done)), None)
                if i is None:
                    break
                pending.remove(i)
                if slot not in workers:
                    workers[slot] = _Worker(slot, gpu, threads, log_dir / f"local-{slot}.log", inbox, forced)
                workers[slot].send(i, left[i][0])
                running[slot] = (i, time.time())
                console.print(f"{time.strftime('%H:%M:%S')} {slot}: started {_label(left[i][0])}", highlight=False,
                              soft_wrap=True, markup=False)
            try:
                slot, msg = inbox.get(timeout=poll_s)
            except queue.Empty:
                continue
            if msg is None:  # the worker process ended
                w = workers.pop(slot)
                if slot in running:
                    i, _ = running.pop(slot)
                    error = (f"worker {slot} (pid {w.proc.pid}) stopped with exit code {w.proc.returncode}; "
                             f"run the grid again to resume (log: {w.log})")
                    _mark_failed(left[i][0], error)
                    summary["failed"].append((left[i][1], error))
                    console.print(f"[red]failed[/]: {left[i][1]}: {error}", highlight=False, soft_wrap=True)
                continue
            i, started = running.pop(slot)
            if msg["error"] is None:
                summary["ran"] += 1
                console.print(f"{time.strftime('%H:%M:%S')} {slot}: done {_label(left[i][0])} ({time.time() - started:.0f} s)",
                              highlight=False, soft_wrap=True, markup=False)
            else:
                summary["failed"].append((left[i][1], msg["error"]))
                console.print(f"[red]failed[/]: {left[i][1]}: {msg['error']}", highlight=False, soft_wrap=True)
    finally:
        for w in workers.values():
            w.close()
    summary["seconds"] = round(time.time() - t0, 1)
    return summary


# ---- Slurm (submitit) --------------------------------------------------------------------------------
class RunCells(submitit.helpers.Checkpointable):
    """A Slurm array task: cells that share stages, in order. On preemption or time-out submitit calls
    ``checkpoint`` (inherited), which requeues the same call: finished cells are skipped (their
    result.json exists) and a cut fine-tuning resumes from its last epoch checkpoint."""

    def __call__(self, cfgs: list) -> list:
        from .grid import result_path
        from ..core.identity import run_id

        return [(run_id(cfg), None if result_path(cfg).exists() else run_cell(cfg)) for cfg in cfgs]


def minutes(text: str) -> int:
    """Slurm's --time forms: MM, HH:MM:SS, D-HH, D-HH:MM(:SS) -> whole minutes."""
    try:
        days, dash, rest = text.rpartition("-")
        parts = [int(p) for p in rest.split(":")]
        if (dash and not days.isdigit()) or len(parts) > 3 or any(p < 0 for p in parts):
            raise ValueError
        if days:
            h, m, s = (parts + [0, 0])[:3]
        elif len(parts) == 1:
            h, m, s = 0, parts[0], 0
        else:
            h, m, s = ([0] * (3 - len(parts)) + parts)[-3:]
        total = int(days or 0) * 1440 + h * 60 + m + (1 if s else 0)
    except ValueError:
        total = 0
    if total <= 0:
        raise UserError(f"--time {text}: give minutes or HH:MM:SS (or D-HH:MM:SS), e.g. --time 12:00:00")
    return total


def slurm(cells: list, folder: Path, *, partition: Optional[str], time_limit: str, gpus_per_job: int,
          cpus_per_job: int, mem_gb: Optional[float], array_parallelism: int, cluster: str = "slurm",
          wait: bool = False) -> dict:
    """Submit the unfinished cells as one job array (one task per group of cells sharing stages);
    logs under ``folder/<array job id>/``. With ``wait``, -> the summary ``grid.reproduce`` returns;
    else the summary holds the job ids. ``cluster="local"`` runs the same jobs as local processes
    through submitit's local executor (how the tests run this path)."""
    left = todo(cells)
    summary = {"cells": len(cells), "skipped": len(cells) - len(left), "ran": 0, "failed": [], "seconds": 0.0,
               "jobs": [], "folder": str(folder)}
    if not left:
        return summary
    keys = [stored_keys(cfg) for cfg, _ in left]
    parts = groups(left, keys)
    if cluster == "slurm" and submitit.AutoExecutor.which() != "slurm":
        raise UserError("--launcher slurm: no Slurm here (sbatch not found); run it on the cluster's login node, "
                        "or use --launcher local")
    executor = submitit.AutoExecutor(folder=str(Path(folder) / "%A"), cluster=cluster)
    executor.update_parameters(name="flowvision", timeout_min=minutes(time_limit), gpus_per_node=gpus_per_job,
                               cpus_per_task=cpus_per_job, mem_gb=mem_gb, slurm_partition=partition,
                               slurm_array_parallelism=array_parallelism)
    for cfg, _ in left:
        _mark_waiting(cfg)
    t0 = time.time()
    jobs = executor.map_array(RunCells(), [[left[i][0] for i in g] for g in parts])
    summary["jobs"] = [j.job_id for j in jobs]
    if not wait:
        return summary
    for job, part in zip(jobs, parts):
        try:
            answers = job.result()
        except Exception as e:  # the job itself failed (killed, out of memory): its log says why
            first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            summary["failed"] += [(left[i][1], f"job {job.job_id} failed: {first}") for i in part]
            continue
        for i, (_, error) in zip(part, answers):
            if error is None:
                summary["ran"] += 1
            else:
                summary["failed"].append((left[i][1], error))
    summary["seconds"] = round(time.time() - t0, 1)
    return summary


if __name__ == "__main__":
    worker_main()
