"""The one training loop: probe, fine-tuning, head refit and demo pre-training all run through it.

What differs between those stages is data, not code: which parameters train (all, or the head
only), whether BatchNorm statistics follow the batches, the optimiser and schedule, and how the
per-sample losses of a batch are reduced (uniform mean, FLOW weights, plus an optional regulariser).

Resume: after every epoch the loop writes model, optimiser and scheduler state to ``checkpoint``.
Every epoch's shuffling and augmentation are seeded from (seed, epoch), so a run killed after
epoch k and resumed gives the same weights as one that was never interrupted. Host-side augmentation
(the PIL path) is drawn per sample from (seed, epoch, sample index) (``data.base.SeededDraws``), so
it is the same for any ``num_workers``; device-side augmentation draws from torch's generator,
seeded per epoch (and per rank under DDP).

Checkpoint selection: by default the model is the last epoch's. With ``select`` (the paper protocol:
target *test* accuracy after each epoch, as the official code) the model ends at the epoch with the
best score; each row records its ``test_acc``, and ``selected_epoch(rows)`` says which one was kept.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..core import distributed
from . import models, weighting
from ..core.console import epoch_done, log_line, progress
from ..data.base import fold_last, make_loader, step_share
from ..core.errors import Diverged
from ..core.hardware import CPU, Hardware
from ..core.files import DamagedFile, load_checked, move_aside, save_checked

# On a GPU the loop reads its running numbers (loss, accuracy, a non-finite loss) back every this many steps,
# so the host queues steps ahead of the GPU instead of waiting for each; on the CPU, where a read costs nothing,
# every step. A non-finite loss still names the step it happened at.
READ_EVERY = 50

if TYPE_CHECKING:
    from .regularizers import LwF


@dataclass(frozen=True)
class Schedule:
    epochs: int
    lr: float
    batch_size: int = 128
    optimizer: str = "sgd"        # sgd (momentum, weight decay) | adam
    momentum: float = 0.9
    weight_decay: float = 5e-4
    cosine: bool = True           # CosineAnnealingLR(T_max=epochs), stepped per epoch; else constant
    head_only: bool = False       # train only the classifier; the backbone is frozen
    bn_train: bool = True         # BatchNorm running statistics follow the batches (model.train())


class StaticWeights:
    """FLOW weights from losses computed once at θ* (Algorithm 1): ``losses`` (N,) by sample index, put on the
    device of the indices once (the first batch's), not copied per batch."""

    def __init__(self, losses: torch.Tensor, tau: float):
        self.losses, self.tau = losses, tau

    def __call__(self, x, y, idx) -> torch.Tensor:
        if self.losses.device != idx.device:
            self.losses = self.losses.to(idx.device, non_blocking=True)
        return self.losses[idx]


class OnlineWeights:
    """FLOW weights as the official code computes them: the probe model's loss (eval mode, no grad)
    on the same augmented batch."""

    def __init__(self, probe: nn.Module, tau: float):
        self.probe, self.tau = probe.eval(), tau
        for p in self.probe.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, x, y, idx) -> torch.Tensor:
        return F.cross_entropy(self.probe(x).float(), y, reduction="none")


class FrozenBackbone(nn.Module):
    """The forward pass of a head-only stage: no graph through the frozen backbone (its BatchNorm
    statistics still update in train mode), then the head. One module, so DDP can wrap it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        with torch.no_grad():
            feats = self.model.forward_features(x)
        return self.model.forward_head(feats)


def _head_params(model: nn.Module) -> list:
    prefix = models.head_prefix(model) + "."
    return [p for n, p in model.named_parameters() if n.startswith(prefix)]


def selected_epoch(rows: list[dict]) -> Optional[int]:
    """The epoch (1-based) a selecting ``train`` kept: the first with the highest ``test_acc``;
    None when the rows were not selected on (the last epoch is the model)."""
    scored = [r for r in rows if r.get("test_acc") is not None]
    if not scored:
        return None
    return max(scored, key=lambda r: (r["test_acc"], -r["epoch"]))["epoch"]


def make_optimizer(params: list, sched: Schedule, hw: Hardware = CPU, fused: bool = True) -> torch.optim.Optimizer:
    """The schedule's optimiser. On the CPU the fused kernels: one pass over all parameters instead of
    torch's default loop over the tensors. Fused SGD gives the loop's weights bit for bit
    (``test_train``); fused Adam rounds differently (it trains only the demo model, whose version says
    so). ``fused=False``: torch's default everywhere, which ``flowvision bench`` times beside it
    (docs/speed.md)."""
    kernels = True if fused and hw.device.type == "cpu" else None  # None: torch's default (foreach on CUDA)
    if sched.optimizer == "sgd":
        return torch.optim.SGD(params, lr=sched.lr, momentum=sched.momentum, weight_decay=sched.weight_decay,
                               fused=kernels)
    if sched.optimizer == "adam":
        return torch.optim.Adam(params, lr=sched.lr, weight_decay=sched.weight_decay, fused=kernels)
    raise ValueError(f"unknown optimizer {sched.optimizer!r}")


def _suspects(*terms) -> str:
    """What to lower when the loss is no longer finite: the strength of each regulariser or distillation term
    in the loss (named by its field, ``l2sp_lambda``, ``ewc_lambda``, ``lwf_lambda``), first, as a large one
    makes the loss diverge whatever the learning rate; then the learning rate."""
    strengths = [f"{type(t).__name__.lower()}_lambda (now {t.lam:g})" for t in terms if getattr(t, "lam", None)]
    return ("lower " + (" or ".join(strengths) + " or the learning rate (--lr)" if strengths
                        else "the learning rate (--lr)") + ", or check the data")


def train(model: nn.Module, dataset, sched: Schedule, *, seed: int, hw: Hardware = CPU,
          weigher: Optional[Callable] = None, normalize: str = "mean",
          regularizer: Optional[Callable[[], torch.Tensor]] = None, distill: Optional[LwF] = None,
          scale_terms: bool = False, decay: Optional[dict] = None,
          select: Optional[Callable[[nn.Module], float]] = None,
          checkpoint: Optional[Path] = None, desc: str = "train") -> list[dict]:
    """Train ``model`` in place on ``dataset`` ((image, label, index) samples).

    weigher(x, y, idx) -> (B,) reference losses for FLOW weights exp(-ref/τ) (None: uniform).
    regularizer (L2SP, EWC): with ``pull="gradient"`` its penalty ``regularizer()`` is added to the loss, with
    ``pull="proximal"`` it acts as a proximal step after the optimiser's (``regularizer.proximal``); distill
    (LwF): the network runs as ``distill.student(model)`` and ``distill(x, source_logits)`` is added to the loss.
    scale_terms: under FLOW's mean-normalised weighted loss, the pull and the distillation are scaled by the
    batch's mean weight as the task loss is (``term_scale=weights``), so that a FLOW combination weighs them
    against the task as the plain method does. decay: parameter name -> its weight decay (None: the schedule's
    for every parameter).
    select(model) -> a score after every epoch (higher is better); the model ends at the first
    epoch with the best score instead of the last (None: the last epoch).
    Returns one row per epoch: stage, epoch, loss (the optimised, weighted loss), ce (plain mean
    cross-entropy), acc (on the augmented batches), lr, seconds, data_seconds, and with ``select``
    test_acc (the score).

    What a step asks of the host on a GPU (docs/speed.md, "The sync budget"): batches come pinned and go to the
    device without blocking (``Hardware.put``), FLOW's losses and the pulls' tensors are on the device once, the
    running numbers stay there and are read every READ_EVERY steps. A step reads no scalar back (fp16's gradient
    scaler reads one flag), and the test of that budget runs the loop under fake CUDA (tests/test_fakecuda.py).
    """
    head = set(map(id, _head_params(model)))
    for p in model.parameters():
        p.requires_grad_(not sched.head_only or id(p) in head)
    params = [p for p in model.parameters() if p.requires_grad]
    if decay is not None:  # one group per weight decay (L2-SP: none on the pulled tensors, β on the others)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        values = sorted({decay.get(n, sched.weight_decay) for n, _ in named})
        params = [{"params": [p for n, p in named if decay.get(n, sched.weight_decay) == v], "weight_decay": v}
                  for v in values]
    opt = make_optimizer(params, sched, hw)
    lr_sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, sched.epochs))
                if sched.cosine else None)
    hw.place(model)  # before a resumed optimiser state is loaded: it follows its parameters' device
    rows, start = [], 0
    best = {"score": None, "state": None}  # the selected epoch's score and CPU state (with ``select``)
    state = None
    if checkpoint is not None:
        # rank 0 decides whether the checkpoint is sound (and moves a damaged one aside); the others read it too
        if distributed.is_main() and checkpoint.exists():
            try:
                state = load_checked(checkpoint, {"checkpoint": desc})
            except DamagedFile as err:
                move_aside(err)  # start from epoch 0: slower, never wrong
        if distributed.broadcast(state is not None) and state is None:
            state = load_checked(checkpoint, {"checkpoint": desc})
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if lr_sched is not None:
            lr_sched.load_state_dict(state["scheduler"])
        rows, start = state["rows"], state["epoch"] + 1
        best = state.get("best") or best
    frozen = sched.head_only and hasattr(model, "forward_features")
    if distill is not None and frozen:
        raise ValueError("distillation trains the backbone; a head-only stage has nothing to distil")
    net = FrozenBackbone(model) if frozen else distill.student(model) if distill is not None else model
    shared = distributed.active()  # several processes: DDP, each with batch_size / N of every step
    if shared:
        distributed.check_batch(sched.batch_size)
        net = distributed.wrap(net, hw.device)
    forward = net if frozen else hw.compiled(net)
    n_proc = distributed.world() if shared else 1
    local_batch = sched.batch_size // n_proc

    n_batches = (-(-len(dataset) // sched.batch_size) if shared  # the same steps under DDP
                 else len(fold_last(list(range(len(dataset))), sched.batch_size)))  # a last batch of one joins one
    proximal = regularizer is not None and getattr(regularizer, "pull", "gradient") == "proximal"
    scaler = hw.scaler()  # fp16 autocast: the gradient scaler (its step reads one flag back per step)
    every = 1 if hw.device.type == "cpu" else READ_EVERY  # steps between two reads of the running numbers
    with progress() as bar:
        task = bar.add_task(desc, total=sched.epochs * n_batches, completed=start * n_batches, info="", unit="batch",
                            epoch_steps=n_batches)
        for epoch in range(start, sched.epochs):
            epoch_seed = seed * 100_003 + epoch
            loading = dict(num_workers=hw.num_workers, pin_memory=hw.device.type == "cuda")
            if shared:
                # this process's slice of every step's batch of one process (the same batches, in the same
                # order, a function of (seed, epoch)); every sample keeps its index
                sampler = step_share(dataset, sched.batch_size, n_proc, distributed.rank(), seed * 100_003)
                sampler.set_epoch(epoch)
                loader = make_loader(dataset, local_batch, sampler=sampler, draw_seed=epoch_seed, **loading)
                torch.manual_seed(epoch_seed + distributed.rank() * 2 ** 50)  # device-side draws, one stream per rank
            else:
                torch.manual_seed(epoch_seed)  # device-side draws
                loader = make_loader(dataset, sched.batch_size, shuffle=True, seed=epoch_seed, draw_seed=epoch_seed,
                                     **loading)
            model.train(sched.bn_train)
            lr = opt.param_groups[0]["lr"]
            t0, data_time = time.time(), 0.0
            # on the device until read, every ``every`` steps: Σ loss·b, Σ ce, Σ correct (float64, as Python
            # added them), the first step (1-based, 0: none) whose loss was not finite and that loss
            totals = torch.zeros(3, dtype=torch.float64, device=hw.device)
            bad_step = torch.zeros((), dtype=torch.float64, device=hw.device)
            bad_loss = torch.zeros((), dtype=torch.float64, device=hw.device)
            tot_loss, tot_ce, tot_correct, seen = 0.0, 0.0, 0.0, 0
            t_data = time.time()
            for step, (x, y, idx) in enumerate(loader):
                x, y = hw.images(x, dataset), hw.put(y)
                data_time += time.time() - t_data
                with hw.autocast():
                    logits = forward(x)
                    if distill is not None:  # the teacher under the same autocast as the student
                        logits, source_logits = logits
                        distilled = distill(x, source_logits)
                per_sample = F.cross_entropy(logits.float(), y, reduction="none")
                scale = None  # the batch's mean FLOW weight, on the device: what the weighted loss scales the task by
                if weigher is None:
                    loss = per_sample.mean()
                else:
                    ref = weigher(x, y, hw.put(idx))
                    # the mean normalisation's weights, computed once: the loss and the terms' scale read them
                    weights = (-ref / weigher.tau).exp() if normalize == "mean" else None
                    loss = weighting.reduce_losses(per_sample, weights, normalize, ref_losses=ref, tau=weigher.tau)
                    if scale_terms and weights is not None:
                        scale = weights.mean()
                if regularizer is not None and not proximal:
                    loss = loss + (regularizer() if scale is None else scale * regularizer())
                if distill is not None:
                    loss = loss + (distilled if scale is None else scale * distilled)
                opt.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    opt.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                if proximal:
                    regularizer.proximal(lr, scale)
                b = len(y)
                with torch.no_grad():
                    value = loss.detach().double()
                    newly = (bad_step == 0) & ~torch.isfinite(value)
                    bad_step = torch.where(newly, float(step + 1), bad_step)
                    bad_loss = torch.where(newly, value, bad_loss)
                    totals += torch.stack([value * b, per_sample.detach().sum().double(),
                                           (logits.detach().argmax(1) == y).sum().double()])
                seen += b
                if (step + 1) % every == 0 or step + 1 == len(loader):
                    # one read: the GPU has queued the steps up to here
                    tot_loss, tot_ce, tot_correct, first, bad = torch.cat([totals, bad_step[None], bad_loss[None]]).tolist()
                    if first > 0:
                        fix = _suspects(regularizer, distill)
                        if regularizer is not None and not proximal:
                            fix = f"the gradient pull is unstable past lr·λ ≈ 3.8: --set pull=proximal, or {fix}"
                        raise Diverged(f"{desc}: the training loss became {bad} at epoch {epoch + 1}, "
                                       f"step {int(first)}; {fix}")
                bar.update(task, advance=1, info=f"epoch {epoch + 1} of {sched.epochs}, loss {tot_loss / max(seen, 1):.3f}")
                t_data = time.time()
            if lr_sched is not None:
                lr_sched.step()
            if shared:  # every process's samples in the epoch's numbers; rank 0's BN statistics everywhere
                tot_loss, tot_ce, tot_correct, seen = distributed.sum_(
                    torch.tensor([tot_loss, tot_ce, tot_correct, seen], dtype=torch.float64)).tolist()
                distributed.sync_buffers(model)
            rows.append({"stage": desc, "epoch": epoch + 1, "loss": tot_loss / seen, "ce": tot_ce / seen,
                         "acc": tot_correct / seen, "lr": lr, "seconds": time.time() - t0,
                         "data_seconds": data_time})
            if select is not None:
                score = rows[-1]["test_acc"] = float(select(model))
                model.train(sched.bn_train)
                if best["score"] is None or score > best["score"]:  # strict: the first best epoch wins
                    best = {"score": score, "state": models.clone_state(model)}
            if checkpoint is not None and distributed.is_main():
                save_checked({"model": model.state_dict(), "optimizer": opt.state_dict(),
                              "scheduler": lr_sched.state_dict() if lr_sched else None,
                              "epoch": epoch, "rows": rows, "best": best}, checkpoint, {"checkpoint": desc})
            log_line(f"{desc}: epoch {epoch + 1} of {sched.epochs}, loss {rows[-1]['loss']:.4f}, training accuracy "
                     f"{100 * rows[-1]['acc']:.2f} %, lr {lr:.3g}, {rows[-1]['seconds']:.1f} s (data loading "
                     f"{data_time:.1f} s)")
            epoch_done(desc, rows, sched.epochs)
    if select is not None and best["state"] is not None:
        model.load_state_dict(best["state"])
    return rows
