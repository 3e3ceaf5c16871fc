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
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..core import distributed
from . import models, weighting
from ..core.console import epoch_done, log_line, progress
from ..data.base import make_loader, step_share
from ..core.errors import UserError
from ..core.hardware import CPU, Hardware
from ..core.files import DamagedFile, load_checked, move_aside, save_checked


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
    """FLOW weights from losses computed once at θ* (Algorithm 1): ``losses`` (N,) by sample index."""

    def __init__(self, losses: torch.Tensor, tau: float):
        self.losses, self.tau = losses, tau

    def __call__(self, x, y, idx) -> torch.Tensor:
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


class L2SP:
    """(λ/2)·Σ‖θ − θ_source‖² over the shared tensors (conv weights); head and BN are task-specific
    and are not pulled (``rule``: models.task_specific_keys). ``reference`` maps parameter names to the source values. The optimiser's
    weight decay (5e-4, as every other method) stays on: L2-SP papers often drop decay on the
    pulled weights, the official FLOW code has no L2-SP to copy, and one optimiser for all methods
    keeps the comparison about the regulariser alone."""

    def __init__(self, model: nn.Module, reference: dict, lam: float, rule: str = "auto"):
        shared, _ = models.split_state(model, rule)
        self.names = [name for name, _ in model.named_parameters() if name in shared]
        params = dict(model.named_parameters())
        self.pairs = [(params[name], reference[name]) for name in self.names]
        self.lam = lam

    def __call__(self) -> torch.Tensor:
        total = sum(((p - ref.to(p.device)) ** 2).sum() for p, ref in self.pairs)
        return 0.5 * self.lam * total


class EWC(L2SP):
    """EWC (Kirkpatrick et al. 2017) without the source data: (λ/2)·Σ_j F̄_j (θ_j − θ_source,j)² over the
    same shared tensors as L2-SP, F̄ the diagonal Fisher of the pre-trained model (``evaluate.fisher_diagonal``:
    target images, labels drawn from its own source predictions) divided by its largest entry over those
    tensors, so 0 ≤ F̄ ≤ 1.

    The scaling is a deviation: Kirkpatrick's λ multiplies the raw Fisher, whose size depends on the model,
    the data and the number of classes, so no published λ transfers. Scaled by its maximum, λ is the L2-SP
    strength of the entry the Fisher finds most important, and an upper bound on every other entry's: EWC
    at λ never pulls harder than L2-SP at λ. That also makes the stiffest entry's stability a matter of λ
    and the learning rate alone (SGD with momentum 0.9 diverges past lr·λ ≈ 3.8), not of the Fisher's
    tail. λ_raw = λ / ``fisher_max`` is Kirkpatrick's. ``fisher``: parameter name -> tensor."""

    def __init__(self, model: nn.Module, reference: dict, fisher: dict, lam: float, rule: str = "auto"):
        super().__init__(model, reference, lam, rule)
        self.fisher_max = fisher_max(fisher, self.names)
        self.importance = [(fisher[name] / self.fisher_max).to(p.device) for name, (p, _) in zip(self.names, self.pairs)]

    def __call__(self) -> torch.Tensor:
        total = sum((f * (p - ref.to(p.device)) ** 2).sum() for (p, ref), f in zip(self.pairs, self.importance))
        return 0.5 * self.lam * total


def fisher_max(fisher: dict, names) -> float:
    """The largest Fisher entry of the tensors ``names`` (what EWC scales by); a UserError when it is not a
    positive number (a pre-trained model certain of every target image gives no Fisher to weigh by)."""
    largest = max((float(fisher[name].max()) for name in names if fisher[name].numel()), default=0.0)
    if not largest > 0 or largest == float("inf"):
        raise UserError(f"EWC: the largest Fisher entry of the pre-trained model over the pulled tensors is {largest}; "
                        "use --set regularizer=l2sp (the unweighted pull), or more images (ewc_samples)")
    return largest


def lwf_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Li & Hoiem 2016, Eq. 2: the cross-entropy between the teacher's and the student's softened outputs,
    −mean_b Σ_c softmax(t_b/T)_c · log softmax(s_b/T)_c. (The paper writes the softened probabilities as
    y^(1/T) renormalised; that is softmax(logits/T).) student, teacher: (B, C) logits."""
    target = F.softmax(teacher / temperature, dim=1)
    return -(target * F.log_softmax(student / temperature, dim=1)).sum(dim=1).mean()


class LwF:
    """Learning without Forgetting (Li & Hoiem 2016) without the source data: λ·``lwf_loss`` added to the
    task loss, between the pre-trained model's source-task outputs on each augmented batch (the teacher:
    its own head and BatchNorms, eval mode, no gradient, fp32) and the student's (``student``: by default
    the model forgetting measures, ``WithSourceParts``).

    Choices, each a deviation from the paper's Algorithm 1 for a stated reason:
    - the targets are computed online, on the same augmented images the network sees (as the official FLOW
      code's online weights), not recorded once per image: with augmentation, a response recorded on one
      view is not the teacher's response to the view being trained on. Cost: one forward pass of the
      pre-trained model per batch.
    - the source head stays frozen (the paper also trains θ_o): Appendix B measures forgetting with the
      pre-trained head restored, so the head the distillation runs through *is* the head that is measured,
      and a trained θ_o would be thrown away.
    - the term is unweighted under FLOW: FLOW's weights weigh the target loss (its definition); the
      distillation keeps the source outputs on every target image alike."""

    def __init__(self, source: nn.Module, lam: float, temperature: float, parts: str = "source", rule: str = "auto"):
        self.source = source.eval()
        for p in self.source.parameters():
            p.requires_grad_(False)
        self.head = self.source.get_classifier()  # the pre-trained head itself, not a copy
        self.lam, self.temperature, self.parts, self.rule = lam, temperature, parts, rule

    def student(self, model: nn.Module) -> nn.Module:
        """``parts="source"``: the source outputs of the model forgetting measures (``WithSourceParts``);
        ``"training"``: the training network's own features through the pre-trained head (``WithSourceHead``)."""
        if self.parts == "training":
            return WithSourceHead(model, self.head)
        return WithSourceParts(model, self.source, self.rule)

    def __call__(self, x: torch.Tensor, source_logits: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher = self.source(x).float()
        return self.lam * lwf_loss(source_logits.float(), teacher, self.temperature)


class WithSourceHead(nn.Module):
    """The training model's forward pass with a second output: its pooled features through the frozen
    pre-trained head. -> (task logits, source logits); the task logits are the model's own forward pass
    (timm's forward_head is pre-logits features, then the classifier), so LwF at λ = 0 is plain training."""

    def __init__(self, model: nn.Module, source_head: nn.Module):
        super().__init__()
        self.model, self.source_head = model, source_head

    def forward(self, x):
        pooled = pooled_features(self.model, x)
        return self.model.get_classifier()(pooled), self.source_head(pooled)


class WithSourceParts(nn.Module):
    """The model forgetting measures, inside the training one. -> (task logits, source logits): the task
    logits are the model's own forward pass (so LwF at λ = 0 is plain training); the source logits are a
    second pass of the same shared tensors through the pre-trained task-specific parts (Appendix B: its
    BatchNorms, in eval mode with their running statistics, and its head). That is
    ``forgetting.measured_model`` computed without a copy, so the distillation keeps what is measured. The
    second pass costs one more forward and backward of the backbone per batch; nothing of the source
    model trains."""

    def __init__(self, model: nn.Module, source: nn.Module, rule: str = "auto"):
        super().__init__()
        self.model, self.source_head = model, source.get_classifier()
        specific = models.task_specific_keys(model, rule) - models.head_keys(model)
        state = source.state_dict()
        self._parts = {f"model.{k}": state[k] for k in specific}  # as ``_Pooled`` names them
        owners = {k.rsplit(".", 1)[0] for k in specific}
        self._norms = [m for name, m in model.named_modules() if name in owners]
        object.__setattr__(self, "_pooled", _Pooled(model))  # not a submodule: the model is registered once

    def forward(self, x):
        task = self.model(x)
        modes = [m.training for m in self._norms]
        for m in self._norms:
            m.eval()
        try:
            pooled = torch.func.functional_call(self._pooled, self._parts, (x,))
        finally:
            for m, mode in zip(self._norms, modes):
                m.train(mode)
        return task, self.source_head(pooled)


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A timm model's pooled pre-logits features: its forward pass without the head."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


class _Pooled(nn.Module):
    """``pooled_features`` as a module, for ``torch.func.functional_call``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return pooled_features(self.model, x)


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


def train(model: nn.Module, dataset, sched: Schedule, *, seed: int, hw: Hardware = CPU,
          weigher: Optional[Callable] = None, normalize: str = "mean",
          regularizer: Optional[Callable[[], torch.Tensor]] = None, distill: Optional[LwF] = None,
          select: Optional[Callable[[nn.Module], float]] = None,
          checkpoint: Optional[Path] = None, desc: str = "train") -> list[dict]:
    """Train ``model`` in place on ``dataset`` ((image, label, index) samples).

    weigher(x, y, idx) -> (B,) reference losses for FLOW weights exp(-ref/τ) (None: uniform).
    regularizer() -> a penalty added to the loss (L2SP, EWC); distill (LwF): the network runs as
    ``distill.student(model)`` and ``distill(x, source_logits)`` is added to the loss.
    select(model) -> a score after every epoch (higher is better); the model ends at the first
    epoch with the best score instead of the last (None: the last epoch).
    Returns one row per epoch: stage, epoch, loss (the optimised, weighted loss), ce (plain mean
    cross-entropy), acc (on the augmented batches), lr, seconds, data_seconds, and with ``select``
    test_acc (the score).
    """
    head = set(map(id, _head_params(model)))
    for p in model.parameters():
        p.requires_grad_(not sched.head_only or id(p) in head)
    params = [p for p in model.parameters() if p.requires_grad]
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

    n_batches = -(-len(dataset) // sched.batch_size)  # the same steps under DDP
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
            t0, data_time, tot_loss, tot_ce, tot_correct, seen = time.time(), 0.0, 0.0, 0.0, 0, 0
            t_data = time.time()
            for step, (x, y, idx) in enumerate(loader):
                x, y = hw.images(x, dataset), y.to(hw.device)
                data_time += time.time() - t_data
                with hw.autocast():
                    logits = forward(x)
                if distill is not None:
                    logits, source_logits = logits
                per_sample = F.cross_entropy(logits.float(), y, reduction="none")
                if weigher is None:
                    loss = per_sample.mean()
                else:
                    ref = weigher(x, y, idx).to(per_sample.device)
                    loss = weighting.weighted_loss(per_sample, None, normalize, ref_losses=ref, tau=weigher.tau)
                if regularizer is not None:
                    loss = loss + regularizer()
                if distill is not None:
                    loss = loss + distill(x, source_logits)
                if not torch.isfinite(loss):
                    raise UserError(f"{desc}: the training loss became {loss.item()} at epoch {epoch + 1}, "
                                    f"step {step + 1}; lower the learning rate (--lr) or check the data")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                b = len(y)
                tot_loss += loss.item() * b
                tot_ce += per_sample.detach().sum().item()
                tot_correct += (logits.argmax(1) == y).sum().item()
                seen += b
                bar.update(task, advance=1, info=f"epoch {epoch + 1} of {sched.epochs}, loss {tot_loss / seen:.3f}")
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
