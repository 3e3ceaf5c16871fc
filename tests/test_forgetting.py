"""The forgetting protocol: which parts of the fine-tuned model are measured, tensor by tensor."""
import pytest
import torch

from flowvision.methods import forgetting, models
from test_models import _randomise


@pytest.mark.parametrize("restore", ["task-specific", "none"])
def test_measured_model_takes_exactly_the_restored_parts_from_the_source(restore):
    source = _randomise(models.create("resnet18", 10), 0)
    source_before = models.clone_state(source)
    finetuned = _randomise(models.with_new_head(source, 4, seed=0), 1)
    fm = forgetting.measured_model(finetuned, source, restore=restore)
    from_source = models.task_specific_keys(source) if restore == "task-specific" else models.head_keys(source)
    assert from_source >= {"fc.weight", "fc.bias"}
    assert ("bn1.running_mean" in from_source) == (restore == "task-specific")
    ft_state = finetuned.state_dict()
    for key, value in fm.state_dict().items():
        expected = source_before[key] if key in from_source else ft_state[key]
        assert torch.equal(value, expected), key
        if key not in from_source:
            assert not torch.equal(value, source_before[key]), key  # the fine-tuned tensor did change
    assert fm.get_classifier().out_features == 10
    for key, value in source.state_dict().items():  # the source model itself is untouched
        assert torch.equal(value, source_before[key]), key


def test_restore_rule_changes_only_the_forgetting_evaluation(tiny):
    """restore=none re-measures the same cached fine-tuning: only the forgetting stage is new."""
    from flowvision.core import config
    from flowvision.stages.run import run as run_one

    a = run_one(config.resolve("gratings", "demo", "ft", tiny))
    b = run_one(config.resolve("gratings", "demo", "ft", dict(tiny, restore="none")))
    assert a["restore"] == "task-specific" and b["restore"] == "none"
    assert {k for k, v in b["stages"].items() if v == "computed"} == {"forgetting"}
    assert a["stage_keys"]["forgetting"] != b["stage_keys"]["forgetting"]
    assert a["target_acc"] == b["target_acc"] and a["source_acc_before"] == b["source_acc_before"]


def test_agreement_and_kl_by_hand():
    from flowvision.methods.evaluate import agreement_kl

    ref = torch.log(torch.tensor([[0.5, 0.5, 0.0], [0.9, 0.05, 0.05]]))
    same = agreement_kl(ref, ref)
    assert same == (1.0, 0.0)
    other = torch.log(torch.tensor([[0.25, 0.75, 1e-9], [0.1, 0.8, 0.1]]))
    agree, kl = agreement_kl(ref, other)
    # row 0: arg-max 0 (first of a tie) vs 1; row 1: 0 vs 1 -> no agreement
    assert agree == 0.0
    row0 = 0.5 * (torch.log(torch.tensor(0.5 / 0.25)) + torch.log(torch.tensor(0.5 / 0.75)))
    row1 = (0.9 * torch.log(torch.tensor(9.0)) + 0.05 * torch.log(torch.tensor(0.05 / 0.8))
            + 0.05 * torch.log(torch.tensor(0.5)))
    assert kl == pytest.approx(float(row0 + row1) / 2, rel=1e-5)


def test_a_wise_subset_is_seeded_class_balanced_nested_and_points_at_the_same_images():
    from flowvision.core import config

    data = forgetting.eval_set(config.resolve("gratings", "demo", "wiseft", {"image_size": 16, "demo_n_test": 60}))
    assert forgetting.subset(data, 60, 0) is None and forgetting.subset(data, None, 0) is None  # nothing to cut
    small, positions = forgetting.subset(data, 20, 0)
    labels = [data.samples[p][1] for p in positions.tolist()]
    assert len(small) == 20 and sorted(labels.count(c) for c in set(labels)) == [2] * 10  # shapes: 10 classes
    for k in (0, 7, 19):
        image, label, index = small[k]
        full_image, full_label, _ = data.dataset[int(positions[k])]
        assert index == k and label == full_label and torch.equal(image, full_image)
    assert positions.tolist() == forgetting.subset(data, 20, 0)[1].tolist()   # seeded: the same every time
    assert set(positions.tolist()) <= set(forgetting.subset(data, 40, 0)[1].tolist())  # nested
    assert positions.tolist() != forgetting.subset(data, 20, 1)[1].tolist()


def test_wise_points_no_table_prints_are_measured_on_the_subset_the_reported_one_on_every_image(tiny):
    """α = 0.001 is nearly the pre-trained model: on the subset its predictions must agree with the
    pre-trained ones on the same images (a misaligned reference would agree by chance only)."""
    from flowvision.core import config
    from flowvision.stages.run import run as run_one

    r = run_one(config.resolve("gratings", "demo", "wiseft", dict(tiny, wise_subset=10,
                                                                   wise_alphas="0,0.001,0.5,0.75,1")))
    by_alpha = {p["alpha"]: p for p in r["wise"]}
    assert {a: (p["source_images"], p["source_subset"]) for a, p in by_alpha.items()} == {
        0.0: (32, False), 0.001: (10, True), 0.5: (32, False), 0.75: (10, True), 1.0: (32, False)}
    assert r["source_acc_after"] == by_alpha[0.5]["source_acc_after"]  # the reported α, on every image
    assert by_alpha[0.001]["source_agreement"] == 1.0 and by_alpha[0.001]["source_kl"] < 1e-3
