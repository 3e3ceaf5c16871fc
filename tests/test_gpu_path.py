"""What the GPU path decides and keeps, checked on the CPU for real: FLOW's losses in fp32 whatever the training
precision, the precision and TF32 a run records, decoded caches hashed once, the prefetching loader, and a
standalone standard fine-tuning that trains no probe for a number nobody asked for."""
import json
import threading

import numpy as np
import pytest
import torch

from flowvision.core import config
from flowvision.stages import pipeline
from flowvision.stages.run import run as run_one


# ---- FLOW's weights do not come from bf16 logits -------------------------------------------------------------
def test_flow_weights_under_bf16_autocast_equal_the_fp32_runs_given_the_same_probe(tiny):
    """The loss pass behind τ runs in fp32 whatever ``amp`` says: the bf16 run (CPU bf16 autocast, as CUDA's
    clean protocol trains) gets the fp32 run's losses, τ and weights bit for bit from the same probe, and finds
    them in the store under the fp32 key. Its probe and fine-tuning are its own (bf16)."""
    fp32 = pipeline.start(config.resolve("gratings", "demo", "flow", tiny))
    bf16 = pipeline.start(config.resolve("gratings", "demo", "flow", dict(tiny, amp=True)))
    bf16.values["probe"] = fp32["probe"]  # the same probe: its key is fp32's too
    bf16.keys["probe"] = fp32.keys["probe"]
    a, b = fp32["weights"], bf16["weights"]
    assert bf16.cfg.amp is True and fp32.cfg.amp is False
    assert torch.equal(a["losses"], b["losses"]) and a["tau"] == b["tau"] and torch.equal(a["weights"], b["weights"])
    assert bf16.keys["losses"] == fp32.keys["losses"] and bf16.status["losses"] == "cached"


def test_the_bf16_loss_pass_would_move_the_weights(tiny):
    """What the fp32 pass prevents, on the same probe and images: the probe's losses under bf16 autocast differ
    from fp32's (so would τ and every weight), while the fp32 pass gives fp32's exactly."""
    import dataclasses

    from flowvision.core.hardware import CPU, full_precision
    from flowvision.methods.evaluate import predict

    r = pipeline.start(config.resolve("gratings", "demo", "flow", tiny))
    probe, data = r["probe"].model, r["task"].train_eval
    bf16 = dataclasses.replace(CPU, amp=True)
    exact, rounded = predict(probe, data, hw=CPU).losses, predict(probe, data, hw=bf16).losses
    assert not torch.equal(exact, rounded) and torch.equal(predict(probe, data, hw=full_precision(bf16)).losses, exact)


# ---- precision and TF32: decided for the device, keyed, recorded ---------------------------------------------
def test_autocast_is_bf16_where_the_gpu_has_bf16_units_else_fp16_keyed_apart():
    from flowvision.core.config import speed_defaults

    cfg = config.resolve("gratings", "demo", "flow+ewc")
    ampere, turing, cpu = speed_defaults(cfg, "cuda"), speed_defaults(cfg, "cuda", bf16=False), speed_defaults(cfg, "cpu")
    assert (ampere.amp, ampere.amp_dtype) == (True, None) and (turing.amp, turing.amp_dtype) == (True, "float16")
    assert (cpu.amp, cpu.amp_dtype, cpu.tf32) == (False, None, None)
    fp = {"task": "t", "source": "s", "source_data": "d"}
    a, t = pipeline.plan(ampere, fp), pipeline.plan(turing, fp)
    assert a["finetune"] != t["finetune"]  # an fp16 fine-tuning is never read for a bf16 one
    assert "amp_dtype" not in pipeline.STAGES["fisher"].keyed_reads(turing)  # the Fisher pass is fp32 either way
    paper = speed_defaults(config.resolve("gratings", "demo", "flow", {"protocol": "paper"}), "cuda", bf16=False)
    assert (paper.amp, paper.amp_dtype) == (False, None)
    true_fp32 = speed_defaults(config.resolve("gratings", "demo", "flow+ewc", {"tf32": "false"}), "cuda")
    assert true_fp32.tf32 is False and pipeline.plan(true_fp32, fp)["fisher"] != a["fisher"]


def test_a_gpu_without_bf16_units_runs_fp16_with_a_gradient_scaler():
    from fakecuda import fake_cuda

    from flowvision.core.hardware import hardware, on_device

    cfg = config.resolve("gratings", "demo", "flow", {"device": "cuda"})
    for capability, precision in (((7, 5), "fp16"), ((8, 6), "bf16"), ((9, 0), "bf16")):
        with fake_cuda(capability=capability):
            hw = hardware(on_device(cfg))
            assert hw.precision == precision and (hw.scaler() is not None) == (precision == "fp16"), capability


def test_tf32_follows_the_setting_and_every_record_says_what_ran(tiny):
    from flowvision.core.hardware import set_tf32, tf32_state

    try:
        for setting, expected in ((None, (True, False)), (False, (False, False)), (True, (True, True))):
            set_tf32(setting)
            assert tuple(tf32_state().values()) == expected
    finally:
        set_tf32(None)
    record = run_one(config.resolve("gratings", "demo", "lp", tiny))
    assert record["precision"] == "fp32" and record["tf32"] is None and record["schema_version"] >= 8  # the CPU: no TF32


# ---- decoded caches: hashed in full once --------------------------------------------------------------------
class _Images(torch.utils.data.Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, i):
        return torch.full((3, 8, 8), i, dtype=torch.uint8), i % 3


def _open(tmp_path):
    from flowvision.data.decoded import decoded

    return decoded(_Images(), lambda x: x, (8, 8), {"n": 12}, tmp_path / "cache", "test", workers=0)


def test_a_second_run_opens_a_decoded_cache_without_hashing_it_and_a_write_to_it_is_still_caught(tmp_path, monkeypatch):
    import os

    from flowvision.data import decoded as D

    hashed = []
    real = D._sha256
    monkeypatch.setattr(D, "_sha256", lambda path: hashed.append(path.name) or real(path))
    first, key = _open(tmp_path)
    assert sorted(hashed) == ["images.npy", "labels.npy"]  # once, while building
    hashed.clear()
    again, _ = _open(tmp_path)
    assert hashed == [] and np.array_equal(again.images, first.images)
    images = tmp_path / "cache" / "decoded" / key / "images.npy"
    before = images.stat()
    data = bytearray(images.read_bytes())
    data[-1] ^= 0xFF
    images.write_bytes(bytes(data))
    os.utime(images, ns=(before.st_atime_ns, before.st_mtime_ns))  # the modification time put back
    rebuilt, _ = _open(tmp_path)  # the change time moved: hashed in full, found damaged, rebuilt
    assert "images.npy" in hashed and rebuilt.images[-1].max() == 11
    assert list((tmp_path / "cache" / "decoded").glob(f"{key}.damaged-*"))


def test_cache_verify_hashes_every_decoded_cache_in_full_whatever_its_stamp_says(tmp_path):
    from typer.testing import CliRunner

    from flowvision.cli import app
    from flowvision.data import decoded as D

    _, key = _open(tmp_path)
    folder = tmp_path / "cache" / "decoded" / key
    data = bytearray((folder / "images.npy").read_bytes())
    data[-1] ^= 0xFF
    (folder / "images.npy").write_bytes(bytes(data))
    (folder / D.STAMP).write_text(json.dumps(D._stamp(folder)))  # a stamp that lies: a run would trust it
    res = CliRunner().invoke(app, ["cache", "--verify", "--cache-dir", str(tmp_path / "cache"),
                                   "--results-dir", str(tmp_path / "none")])
    assert res.exit_code == 0, res.output
    assert f"{key}" in res.output and "damaged (its checksum does not match its header), moved aside" in res.output
    assert "1 decoded cache hashed in full, 1 damaged" in res.output and not folder.exists()
    _open(tmp_path)  # rebuilt by the next run
    res = CliRunner().invoke(app, ["cache", "--verify", "--cache-dir", str(tmp_path / "cache"),
                                   "--results-dir", str(tmp_path / "none")])
    assert "ok" in res.output and "0 damaged" in res.output


# ---- the decoded path reads the next batch while this one computes ---------------------------------------------
@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true")
def test_the_decoded_path_for_a_gpu_prefetches_the_next_batch_in_order():
    """With pinning (a GPU) a data set of uint8 arrays with a batch transform is read a batch ahead by a thread:
    batch 2's images are read before the loop asks for it. Same batches, same order as without."""
    from flowvision.data.base import Indexed, Prefetched, make_loader
    from flowvision.data.decoded import Decoded

    asked = threading.Event()

    class Watched(Decoded):
        def __getitem__(self, i):
            if i == 8:  # the first image of the second batch
                asked.set()
            return super().__getitem__(i)
    rng = np.random.default_rng(0)
    data = Indexed(Watched(rng.integers(0, 256, (24, 3, 4, 4), dtype=np.uint8), np.arange(24)),
                   batch_transform=lambda x: x)
    plain = list(make_loader(data, 8, shuffle=True, seed=3))
    loader = make_loader(data, 8, shuffle=True, seed=3, pin_memory=True)
    assert isinstance(loader, Prefetched) and len(loader) == 3
    batches = iter(loader)
    asked.clear()
    first = next(batches)
    assert asked.wait(10), "the second batch was not read ahead"
    rest = list(batches)
    assert all(torch.equal(a, b) for x, y in zip(plain, [first] + rest) for a, b in zip(x, y))
    assert not isinstance(make_loader(data, 8), Prefetched)  # the CPU: read in the loop, as before


@pytest.mark.filterwarnings("ignore:'pin_memory' argument is set as true")
def test_an_error_while_prefetching_is_raised_in_the_loop():
    from flowvision.data.base import Indexed, make_loader

    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            if i == 9:
                raise OSError("unreadable")
            return torch.zeros(3, 2, 2, dtype=torch.uint8), 0
    batches = iter(make_loader(Indexed(Broken(), batch_transform=lambda x: x), 8, pin_memory=True))
    next(batches)
    with pytest.raises(OSError, match="unreadable"):
        next(batches)


# ---- a standalone standard fine-tuning trains no probe ---------------------------------------------------------
def test_a_standalone_ft_run_trains_no_probe_and_its_record_says_why_table_5_has_no_number(tiny):
    ft = run_one(config.resolve("gratings", "demo", "ft", tiny))
    assert "probe" not in ft["stages"] and "probe_test" not in ft["stages"]
    assert ft["hard10_acc"] is None and "trains no linear probe" in ft["hard10_note"]
    asked = run_one(config.resolve("gratings", "demo", "ft", dict(tiny, hard10=True)))  # the same run folder
    assert asked["run_id"] == ft["run_id"] and asked["hard10_acc"] is not None and asked["hard10_note"] is None
    assert asked["stages"]["finetune"] == "cached" and asked["stages"]["probe"] == "computed"


def test_an_ft_run_after_a_flow_run_reads_the_shared_probe_and_grids_ask_for_it(tiny):
    from flowvision.scale.grid import grid

    flow = run_one(config.resolve("gratings", "demo", "flow", tiny))
    ft = run_one(config.resolve("gratings", "demo", "ft", dict(tiny, seed=flow["seed"])))
    assert ft["stages"]["probe_test"] == "cached" and ft["hard10_acc"] is not None
    cells = grid("demo", ["gratings"], ["ft", "flow"], [0], {})
    assert all(cfg.hard10 for cfg, _ in cells) and "--set hard10=true" in cells[0][1]
    assert not any(cfg.hard10 for cfg, _ in grid("demo", ["gratings"], ["ft", "wiseft"], [0], {}))


def test_bench_fisher_times_the_loop_and_the_vmap_chunks_side_by_side():
    from typer.testing import CliRunner

    from flowvision.cli import app

    res = CliRunner().invoke(app, ["bench", "--fisher", "--model", "test_resnet", "--image-size", "16", "--images", "12",
                                   "--repeats", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "one backward per image (the usual loop)" in res.output and "vmap over grad, 10 at a time" in res.output
    assert "vmap over grad, 12 at a time (cpu's chunk)" in res.output  # the chunk, capped at the images there are
