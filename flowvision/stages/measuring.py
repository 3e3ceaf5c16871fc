"""The measuring stages of one run: target accuracy (with every test sample's correctness), the probe's
loss on every test sample (Table 5's difficulty), accuracy on the hardest 10%, the pre-trained model's
source accuracy and predictions, forgetting (the measured model of Appendix B against them) and the
WiSE-FT points. Compute functions of the stage's inputs with their declarations, as ``training``'s.
"""
from __future__ import annotations

from ..core.knobs import read_by
from ..methods.forgetting import measured_model, source_after, source_before, subset
from .training import final_task


# ---- evaluations ---------------------------------------------------------------------------------------
def target_eval(i):
    """Target accuracy, and every test sample's top-1 correctness (N,) bool for Table 5, on the test set
    of the reported model's split."""
    from ..methods.evaluate import accuracy

    return accuracy(i["final"].model, final_task(i).test, i.hw, "target accuracy", keep_correct=True)


def probe_test(i):
    """Table 5's difficulty: the pre-trained model's loss on every test sample, i.e. the linear probe
    (pre-trained backbone, head fitted to the task; Algorithm 1's θ*), eval transforms, by index:
    losses (N,) float32. One inference pass, shared by every method of a seed through the probe's key
    (standard FT uses no probe otherwise; it is trained for this table). A task with a split per
    official script gets the losses on every split's test set, under "splits" (the reported model may
    end on any of them)."""
    from ..methods.evaluate import per_sample_losses

    probe, task = i["probe"].model, i["task"]
    losses, labels = per_sample_losses(probe, task.test, device=i.hw, return_labels=True,
                                       desc="test losses (probe model)")
    splits = {}
    for name, part in task.splits.items():
        q, q_labels = per_sample_losses(probe, part.test, device=i.hw, return_labels=True,
                                        desc=f"test losses (probe model, split {name})")
        splits[name] = {"losses": q, "labels": q_labels}
    probe.cpu()
    return {"losses": losses, "labels": labels, "splits": splits}


def hard(i):
    """Accuracy on the hardest 10% of the test samples (highest probe loss; evaluate.hard_accuracy)
    of the reported model, and of every WiSE-FT point. Cheap and pure: recomputed, never stored."""
    from ..methods.evaluate import hard_accuracy

    test = i["probe_test"]
    losses = test.get("splits", {}).get(i["final"].split, test)["losses"]  # the reported model's test set
    out = hard_accuracy(losses, i["target_eval"]["correct"])
    wise = i.up.get("wise")
    out["wise"] = ({p["alpha"]: hard_accuracy(losses, c)["acc"] for p, c in zip(wise["points"], wise["target_correct"])}
                   if wise else {})
    return out


def source_eval(i):
    """Source accuracy of the pre-trained model and its log-probabilities on every source image
    (N × classes float32: 200 MB for the full IN-1K val), the reference for agreement and KL."""
    return source_before(i["source"].model, i["source_data"].dataset, i.hw)


def forgetting(i):
    """Source accuracy of the measured model, and the label-free pair: agreement with the pre-trained
    model's top-1 class and the mean KL(pre-trained || measured)."""
    if "final" not in i.up:  # see forgetting_needs
        return unchanged(i["source_eval"])
    return source_after(i["final"].model, i["source"].model, i["source_data"].dataset, i["source_eval"]["logprobs"],
                        i.hw, task_specific=restore_rule(i.cfg), restore=i.cfg.restore)


def unchanged(before: dict) -> dict:
    """The forgetting evaluation of a measured model that *is* the pre-trained one: its own
    evaluation, agreement 1 and KL 0 exactly, without a second pass."""
    return {**{k: before[k] for k in ("acc", "acc5", "n", "n_labelled")}, "agreement": 1.0, "kl": 0.0,
            "reused": "source_eval"}


def restore_rule(cfg) -> str:
    """The task_specific rule, read only where the restore rule uses it."""
    return cfg.task_specific if cfg.restore == "task-specific" else "auto"


def forgetting_reads(cfg) -> tuple:
    return ("restore", "finetune") + (("task_specific",) if cfg.restore == "task-specific" else ())


def forgetting_needs(cfg) -> tuple:
    # Linear probing trains the head alone (and, in train mode, moves BatchNorm statistics): when the
    # restore rule takes the head and every BatchNorm back, the measured model *is* the pre-trained
    # one, so its evaluation is reused rather than repeated. A head-only rule keeps the probe's
    # BatchNorm statistics, so it is measured.
    if not cfg.finetune and cfg.restore == "task-specific" and cfg.task_specific != "head":
        return ("source_eval",)
    return ("final", "source", "source_data", "source_eval")


def wise_alphas(cfg) -> list:
    return sorted(set(cfg.wise_alphas) | ({cfg.wise_alpha} if cfg.wise_alpha is not None else set()))


def wise_reads(cfg) -> tuple:
    return ("wise_alphas", "wise_alpha", "restore", "task_specific", "wise_subset", "data_seed") + read_by("wise", cfg)


def wise(i):
    """WiSE-FT points: for each α, target and source accuracy of the interpolated model. α = 1 is the
    fine-tuned model exactly and, with the task-specific parts restored, α = 0 measures the
    pre-trained model exactly: those evaluations are reused, not repeated. Every other point but the
    reported α measures source accuracy on a seeded class-balanced subset of ``wise_subset`` images when
    the source set is larger (a curve's shape, not a table's number: 10,000 of IN-1K's 50,000 images);
    each point records how many images it was measured on."""
    from ..methods import models
    from ..methods.evaluate import accuracy

    points, correct = [], []
    sub = subset(i["source_data"], i.cfg.wise_subset, i.cfg.data_seed)
    # wise_keys=all: every tensor but the head, the BatchNorms and their statistics too (the official wise-ft's
    # all-keys interpolation); shared: the shared tensors alone, the target keeping its fine-tuned BatchNorms
    rule = "head" if i.cfg.wise_keys == "all" else i.cfg.task_specific
    for alpha in wise_alphas(i.cfg):
        m = models.interpolate_shared(i["source"].model, i["final"].model, alpha, rule)
        tgt = i["target_eval"] if alpha == 1 else accuracy(m, final_task(i).test, i.hw, f"target accuracy α={alpha:g}",
                                                           keep_correct=True)
        correct.append(tgt["correct"])
        if alpha == 1:
            src = i["forgetting"]
        elif alpha == 0 and i.cfg.restore == "task-specific":
            src = unchanged(i["source_eval"])
        else:
            images, reference = ((sub[0], i["source_eval"]["logprobs"][sub[1]]) if sub and alpha != i.cfg.wise_alpha
                                 else (i["source_data"].dataset, i["source_eval"]["logprobs"]))
            src = source_after(m, i["source"].model, images, reference, i.hw, task_specific=restore_rule(i.cfg),
                               restore=i.cfg.restore, desc=f"source accuracy (after) α={alpha:g}")
        points.append({"alpha": alpha, "target_acc": tgt["acc"], "source_acc_after": src["acc"],
                       "source_top5_after": src["acc5"], "source_agreement": src["agreement"],
                       "source_kl": src["kl"], "source_images": src["n"],
                       "source_subset": src["n"] < i["source_data"].n_images})
    return {"points": points, "target_correct": correct}  # correct: (N,) bool per point, for Table 5


# ---- selection on held-out images (val_split > 0) -----------------------------------------------------------
def source_halves(n: int, seed: int) -> tuple:
    """The source images split in two seeded halves, by position: (selection, report). Settings are chosen on
    the first, and reported on the second, so that the number reported is not the number chosen on."""
    import torch

    from ..data.base import sample_seed

    order = sorted(range(n), key=lambda i: sample_seed(seed + 1, i))  # another draw than the target's hold-out
    return torch.tensor(sorted(order[: n // 2])), torch.tensor(sorted(order[n // 2:]))


def _halves(after, before_top1, select, report) -> dict:
    """Source accuracy (labelled images) and agreement with the pre-trained top-1 on each half, before and after."""
    top1 = after.logprobs.argmax(1)
    out = {}
    for name, idx in (("select", select), ("report", report)):
        labelled = after.labelled[idx]
        acc = (lambda hits: float(hits[labelled].float().mean()) if labelled.any() else None)
        out[f"source_{name}_after"] = acc(after.correct[idx])
        out[f"source_{name}_before"] = acc(before_top1[idx] == after.labels[idx])
        out[f"agreement_{name}"] = float((top1[idx] == before_top1[idx]).float().mean())
    return out


def select(i):
    """What a setting is chosen on, apart from what is reported (``val_split``): the reported model's accuracy on
    the held-out training images (``task.val``, never trained on) and, on the selection half of the source images
    (``source_halves``), its source accuracy and agreement; the same on the report half, which the frontier
    reports; each WiSE-FT point alike. One more pass over the source images per model (forgetting's pass keeps
    no per-image numbers)."""
    from ..methods import models
    from ..methods.evaluate import accuracy, predict

    cfg, data = i.cfg, i["source_data"]
    task = final_task(i)
    before_top1 = i["source_eval"]["logprobs"].argmax(1)
    chosen, reported = source_halves(len(before_top1), cfg.data_seed)

    def numbers(model, label: str) -> dict:
        val = accuracy(model, task.val, i.hw, f"held-out accuracy{label}")["acc"]
        measured = measured_model(model, i["source"].model, restore_rule(cfg), restore=cfg.restore)
        after = predict(measured, data.dataset, hw=i.hw, desc=f"source accuracy (selection){label}", keep_logprobs=True)
        measured.cpu()
        return {"target_val": val, **_halves(after, before_top1, chosen, reported)}

    out = {**numbers(i["final"].model, ""), "n_val": len(task.val), "n_select": len(chosen), "n_report": len(reported),
           "wise": {}}
    for alpha in wise_alphas(cfg):
        rule = "head" if cfg.wise_keys == "all" else cfg.task_specific  # as the wise stage interpolates
        m = models.interpolate_shared(i["source"].model, i["final"].model, alpha, rule)
        out["wise"][f"{alpha:g}"] = numbers(m, f" α={alpha:g}")
    return out


def select_reads(cfg) -> tuple:
    return ("val_split", "data_seed", "restore", "wise_alphas", "wise_alpha") + (
        ("task_specific",) if cfg.restore == "task-specific" or wise_alphas(cfg) else ()) + read_by("wise", cfg)
