"""What pulls a fine-tuning back towards the pre-trained model, as loss terms to add to the task loss:
ℓ2-SP (``L2SP``: (λ/2)·Σ‖θ − θ_source‖² over the shared tensors), EWC (``EWC``: the same pull weighted by
the pre-trained model's diagonal Fisher, scaled to a largest entry of 1) and LwF (``LwF``: the pre-trained
model's source outputs kept on the target images, through the parts forgetting measures). The training
loop (``train``) adds them; nothing here knows about stages or runs. The three classes are the public
``flowvision.L2SP``, ``flowvision.EWC`` and ``flowvision.LwF``: built once, each call returns the term to add.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UserError
from . import models


class L2SP:
    """L2-SP (Li, Grandvalet & Davoine 2018): (λ/2)·Σ‖θ − θ_source‖² over the shared tensors (conv weights); head and
    BN are task-specific and are not pulled (``rule``: models.task_specific_keys, as ``measured_model``'s
    task_specific). ``model``: the network being fine-tuned; ``reference``: the pre-trained model (its values are
    copied) or its state dict (parameter name -> tensor); ``lam``: λ. The references are put on the device of the
    model's parameters once, here: build a pull after the model is placed (``model.to(device)`` first). The paper's β
    (plain L2 on what the pull does not cover) is the optimiser's weight decay on those tensors (the stage gives the
    pulled ones none: ``decay``).

    ``pull``: ``gradient`` (in your own loop: ``loss = task_loss + reg()``, ``reg()`` a 0-dim tensor whose gradient
    is λ·(θ − θ_source) on the shared parameters; stable only while lr·λ is small: SGD with momentum 0.9 diverges
    past lr·λ ≈ 3.8); ``proximal`` leaves the loss alone and, after each optimiser step, ``reg.proximal(lr)`` moves
    each pulled tensor to the minimiser of (1/2·lr)‖θ' − θ‖² + (λ/2)‖θ' − θ_source‖²,
    θ' = θ_source + (θ − θ_source)/(1 + lr·λ): the same pull to first order in lr·λ, stable at any lr·λ (a strong
    pull keeps θ at θ_source instead of overshooting it). flowvision's runs use ``proximal`` (``pull``)."""

    def __init__(self, model: nn.Module, reference: nn.Module | dict, lam: float, rule: str = "auto",
                 pull: str = "gradient"):
        if isinstance(reference, nn.Module):
            reference = models.clone_state(reference)  # a copy: the pull stays put whatever happens to the model
        shared, _ = models.split_state(model, rule)
        self.names = [name for name, _ in model.named_parameters() if name in shared]
        params = dict(model.named_parameters())
        # the model is where it trains (``hardware.place``) before a pull is built: each reference goes there once
        self.pairs = [(params[name], reference[name].to(params[name].device, non_blocking=True)) for name in self.names]
        self.lam, self.pull = lam, pull

    def stiffness(self) -> list:
        """Per pulled tensor, how hard it is pulled relative to λ: 1 (L2-SP pulls every entry alike)."""
        return [1.0] * len(self.pairs)

    def __call__(self) -> torch.Tensor:
        total = sum((w * (p - ref) ** 2).sum() for (p, ref), w in zip(self.pairs, self.stiffness()))
        return 0.5 * self.lam * total

    @torch.no_grad()
    def proximal(self, lr: float, scale: torch.Tensor | None = None) -> None:
        """The pull as a proximal step of learning rate ``lr`` (``scale``: a factor on λ, FLOW's mean weight of
        the batch; a tensor on the device, read by nobody): θ ← θ_source + (θ − θ_source)/(1 + lr·λ·scale·w)."""
        strength = lr * self.lam * (1.0 if scale is None else scale)
        for (p, ref), w in zip(self.pairs, self.stiffness()):
            s = strength * w
            p.sub_((p - ref) * (s / (1 + s)))  # = θ_source + (θ − θ_source)/(1 + s), and θ exactly where s = 0


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
    tail. λ_raw = λ / ``fisher_max`` is Kirkpatrick's. ``fisher``: parameter name -> tensor (``EWC.fisher``);
    the other arguments and the call are L2SP's."""

    def __init__(self, model: nn.Module, reference: nn.Module | dict, fisher: dict, lam: float, rule: str = "auto",
                 pull: str = "gradient"):
        super().__init__(model, reference, lam, rule, pull)
        self.fisher_max = fisher_max(fisher, self.names)
        self.importance = [(fisher[name] / self.fisher_max).to(p.device, non_blocking=True)
                           for name, (p, _) in zip(self.names, self.pairs)]

    def stiffness(self) -> list:
        """Per pulled tensor its scaled Fisher F̄ (0 ≤ F̄ ≤ 1): the share of λ each entry is pulled with."""
        return self.importance

    @staticmethod
    def fisher(pretrained: nn.Module, dataset, *, samples: int | None = None, draws: int = 1,
               device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
        """The diagonal Fisher EWC weighs by: ``evaluate.fisher_diagonal`` of the pre-trained model (its own source
        head, eval mode, fp32) on the target training images of ``dataset`` (a map-style data set of (image,
        label) pairs under the eval transform; its labels are not read: each image's ``draws`` labels are drawn
        from the model's own predictions). ``samples``: a seeded subset of that many images (None: all).
        ``device``: where to run (None: where the model is; it is back there afterwards). -> parameter name ->
        (that parameter's shape) float32 on the CPU, the mean squared gradient of log p(y | x)."""
        from ..core.hardware import device_of, for_model
        from .evaluate import fisher_diagonal, in_order

        home = device_of(pretrained)
        out = fisher_diagonal(pretrained, in_order(dataset), samples=samples, draws=draws,
                              hw=for_model(device, pretrained))
        pretrained.to(home)
        return out["fisher"]


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

    In a loop: ``lwf = LwF(copy.deepcopy(pretrained).to(device), lam, temperature)`` (the teacher is frozen and
    put in eval mode in place: pass a copy), ``net = lwf.student(model)``; each step ``logits, source_logits =
    net(x)`` (x: (B, 3, H, W) on the teacher's device; logits (B, target classes), source_logits (B, source
    classes)) and ``loss = task_loss + lwf(x, source_logits)``, a 0-dim tensor in nats scaled by λ.

    Choices, each a deviation from the paper's Algorithm 1 for a stated reason:
    - the targets are computed online, on the same augmented images the network sees (as the official FLOW
      code's online weights), not recorded once per image: with augmentation, a response recorded on one
      view is not the teacher's response to the view being trained on. Cost: one forward pass of the
      pre-trained model per batch.
    - the source head stays frozen (the paper also trains θ_o): Appendix B measures forgetting with the
      pre-trained head restored, so the head the distillation runs through *is* the head that is measured,
      and a trained θ_o would be thrown away.
    - the term is unweighted under FLOW: FLOW's weights weigh the target loss (its definition); the
      distillation keeps the source outputs on every target image alike. (The training loop may scale the
      whole term by the batch's mean weight, as the weighted task loss is scaled: ``term_scale``.)
    - with ``parts="training"`` the teacher sees each batch with its batch statistics, as the student's own
      BatchNorms in training mode do (its running statistics unchanged): before the first step the student's
      source outputs are the teacher's, and the term's gradient is zero; with running statistics beside the
      student's batch statistics it pulled towards outputs the student never had."""

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
        with torch.no_grad(), (batch_statistics(self.source) if self.parts == "training" else contextlib.nullcontext()):
            teacher = self.source(x).float()
        return self.lam * lwf_loss(source_logits.float(), teacher, self.temperature)


@contextlib.contextmanager
def batch_statistics(model: nn.Module):
    """``model``'s BatchNorms normalise with each batch's statistics (training mode) and leave their running
    statistics and counters as they are (momentum 0, counters put back); the model's modes are restored after."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    kept = [(m.training, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
            for m in norms]
    for m in norms:
        m.train()
        m.momentum = 0.0
    try:
        yield model
    finally:
        for m, (mode, momentum, counter) in zip(norms, kept):
            m.train(mode)
            m.momentum = momentum
            if counter is not None:
                m.num_batches_tracked.copy_(counter)


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
