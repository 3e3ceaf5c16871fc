import torch

from flowvision.data.synthetic import SPECS, generate, load_synthetic_task


def test_tasks_are_deterministic_from_the_seed():
    a, b, c = generate("gratings", 20, 16, 0), generate("gratings", 20, 16, 0), generate("gratings", 20, 16, 1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(generate("patterns", 20, 16, 0)[0], a[0])


# 8-px images in the label-noise tests: the labels are drawn per sample whatever the size (2,000 images at the
# default 32 px take a second to draw), and both sides of each comparison draw at the same size.
def test_label_noise_only_on_training_labels():
    task = load_synthetic_task("gratings", image_size=8, n_train=2000, n_test=300)
    clean_train = generate("gratings", 2000, 8, 0, 0.15)[1]
    observed = torch.tensor([task.train[i][1] for i in range(2000)])
    noisy = (observed != clean_train).float().mean().item()
    assert 0.10 < noisy < 0.16  # 15% resampled uniformly: 15% × 7/8 change
    test_clean = generate("gratings", 300, 8, 1)[1]
    assert torch.equal(torch.tensor([task.test[i][1] for i in range(300)]), test_clean)


def test_samples_carry_their_index_and_shapes():
    task = load_synthetic_task("shapes", image_size=16, n_train=12, n_test=6, augment=True)
    x, y, i = task.train[5]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and i == 5 and 0 <= y < SPECS["shapes"].num_classes
    x0, _, _ = task.train_eval[5]
    x1, _, _ = task.train_eval[5]
    assert torch.equal(x0, x1)  # eval transforms are deterministic


def test_noisy_flags_are_the_labels_the_generator_replaced():
    task = load_synthetic_task("gratings", image_size=8, n_train=2000, n_test=10, augment=False)
    true = generate("gratings", 2000, 8, 0, 0.0)[1]  # the same stream without the replacement draw
    observed = torch.tensor([task.train[i][1] for i in range(2000)])
    assert task.noisy.dtype == torch.bool and task.noisy.shape == (2000,)
    assert torch.equal(task.noisy, observed != true)
    assert 0.10 < task.noisy.float().mean().item() < 0.16  # 15% drawn again, 7/8 of them to another class
    assert torch.equal(load_synthetic_task("gratings", image_size=8, n_train=2000, n_test=10, data_path="device").noisy,
                       task.noisy)
    assert not load_synthetic_task("shapes", n_train=50, n_test=10).noisy.any()  # the source task is clean
