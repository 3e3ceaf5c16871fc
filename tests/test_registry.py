"""The registry is the one list of names: every consumer agrees with it."""
import pytest
from typer.testing import CliRunner

from flowvision.core import config, registry
from flowvision.reporting import tables
from flowvision.cli import app
from flowvision.core.errors import UserError


def test_every_data_set_has_exactly_one_loader_spec():
    from flowvision.data import loaders, specs, synthetic

    assert list(specs.REAL_TASKS) == list(registry.REAL_DATASETS)
    assert set(specs.SPECS) == set(registry.REAL_DATASETS)          # no spec left without a name
    assert set(loaders.LOADERS) | {"caltech101"} == set(registry.REAL_DATASETS)
    assert set(synthetic.SPECS) == set(registry.SYNTHETIC_DATASETS)
    assert set(registry.DATASETS) == set(specs.REAL_TASKS) | set(synthetic.SPECS)
    assert synthetic.SOURCE_TASK not in registry.DEMO_DATASETS


def test_groups_and_paper_lists_are_registry_names():
    assert set(registry.PAPER_DATASETS) | set(registry.EXTRA_DATASETS) == set(registry.REAL_DATASETS)
    assert registry.DATASET_GROUPS["paper"] == registry.PAPER_DATASETS
    assert all(set(names) <= set(registry.DATASETS) for names in registry.DATASET_GROUPS.values())
    assert set(registry.PAPER_METHODS) <= set(registry.METHODS)
    assert set(registry.DEMO_METHODS) <= set(registry.METHODS)
    assert all(base is None or base in registry.METHODS for base, _ in registry.METHODS.values())
    assert set(registry.PAPER_MODELS) <= set(registry.MODEL_TAGS)
    assert tables.PAPER_DATASETS is registry.PAPER_DATASETS and config.METHODS is registry.METHODS


@pytest.mark.parametrize("text,names", [
    ("paper", list(registry.PAPER_DATASETS)),
    ("demo", ["gratings", "patterns"]),
    ("dtd, demo,dtd,", ["dtd", "gratings", "patterns"]),
])
def test_resolve_dataset_group(text, names):
    assert registry.resolve_dataset_group(text) == names


def test_check_dataset_lists_the_valid_names():
    assert registry.check_dataset("dtd") == "dtd"
    with pytest.raises(UserError, match="unknown data set 'gratings': choose one of cifar10, .*oxford_pets$"):
        registry.check_dataset("gratings", registry.REAL_DATASETS)


def test_every_registry_method_resolves_and_the_cli_lists_them():
    for method in registry.METHODS:
        assert config.resolve("gratings", "demo", method).method == method
    res = CliRunner().invoke(app, ["finetune", "--help"], env={"COLUMNS": "400"})
    assert res.exit_code == 0
    assert f"One of: {', '.join(registry.METHODS)}." in res.output
    assert all(name in res.output for name in registry.REAL_DATASETS + registry.DEMO_DATASETS)
