import pytest

from flowvision.core import config
from flowvision.core.errors import UserError


def test_order_defaults_file_preset_method_section_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 7\nlr: 0.3\nrefit: false\nmethods:\n  ft: {lr: 0.02}\n  flow: {lr: 0.001, tau: p30}\n")
    ft = config.resolve("gratings", "demo", "ft", config_file=f)
    assert (ft.epochs, ft.lr, ft.refit) == (7, 0.02, False)
    flow = config.resolve("gratings", "demo", "flow", config_file=f)
    assert (flow.lr, flow.tau, flow.refit) == (0.001, "p30", True)  # the preset's refit wins over the file's top level
    wise = config.resolve("gratings", "demo", "wiseft", config_file=f)
    assert wise.lr == 0.02  # inherits ft's section
    over = config.resolve("gratings", "demo", "flow", {"lr": "0.5", "refit": "false"}, config_file=f)
    assert (over.lr, over.refit) == (0.5, False)
    assert config.resolve("gratings", "demo", "ft", {"seed": 4}, config_file=f).seed == 4


def test_demo_config_file_is_found_and_paper_configs_exist():
    assert config.config_file_for("demo", "gratings").name == "demo.yaml"
    cfg = config.resolve("gratings", "demo", "flow")
    assert cfg.probe_epochs == 6 and cfg.lr == 0.01


@pytest.mark.parametrize("overrides,message", [
    ({"nope": 1}, "unknown config key nope"),
    ({"epochs": "2.5"}, "'epochs'"),
    ({"refit": "maybe"}, "true or false"),
    ({"weighting": "hard"}, "weighting 'hard' is not valid"),
    ({"wise_alphas": "0.5 1.5"}, "WiSE-FT α must lie in [0, 1]"),
    ({"batch_size": 0}, "batch_size must be > 0"),
    ({"n_test": 0}, "n_test must be ≥ 1"),
    ({"image_size": -3}, "image_size must be ≥ 8 pixels"),
    ({"num_workers": -1}, "num_workers must be ≥ 0"),
    ({"momentum": 1.5}, "momentum must lie in [0, 1)"),
    ({"weight_decay": -1}, "weight_decay must be ≥ 0"),
    ({"imagenet_transform": "bicubic"}, "imagenet_transform 'bicubic' is not valid"),
    ({"task_specific": "bn"}, "task_specific 'bn' is not valid; choose one of: auto, head, head+bn, head+norms"),
    ({"method": "ft"}, "'method' cannot be set in --set; use --method"),
    ({"model": "resnet18"}, "'model' cannot be set in --set; use --model"),
])
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(UserError) as e:
        config.resolve("gratings", "demo", "flow", overrides)
    assert message in str(e.value)


def test_bad_yaml_is_a_user_error(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("epochs: [1\n")
    with pytest.raises(UserError, match="not valid YAML"):
        config.resolve(config_file=f)
    f.write_text("dataset: cifar10\n")
    with pytest.raises(UserError, match="'dataset' cannot be set in"):
        config.resolve(config_file=f)
    f.write_text("methods:\n  flow: {learning_rate: 1}\n")
    with pytest.raises(UserError, match=r"learning_rate in .*methods.flow"):
        config.resolve(config_file=f)


def test_the_model_defaults_to_the_data_set_and_every_value_says_where_it_came_from():
    trace = {}
    cfg = config.resolve("cifar10", None, "flow", {"tau": "1.0"}, trace=trace)
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.protocol) == ("resnet18", 20, 0.001, "clean")
    assert trace["model"] == "default for a real data set" and trace["tau"] == "command line"
    assert trace["epochs"].startswith("config file ") and trace["epochs"].endswith("resnet18/cifar10.yaml")
    assert trace["lr"].endswith("(methods.flow)") and trace["weighting"] == "preset flow"
    assert trace["protocol"] == "default" and set(trace) == set(config.FIELDS)
    assert config.resolve("gratings").model == "demo"


def test_resnet50_configs_say_whose_hyper_parameters_they_are_and_have_no_official_tau():
    for path in sorted((config.CONFIG_DIR / "resnet50").glob("*.yaml")):
        if path.name == config.DEFAULT_CONFIG:  # for data sets no file names: a folder of the user's images
            cfg = config.resolve("folder:anywhere", "resnet50", "flow")
            assert "ResNet-50's were not published" in cfg.hparams_note and "default.yaml" in cfg.hparams_note
            continue
        cfg = config.resolve(path.stem, "resnet50", "flow")
        assert cfg.hparams_note == "ResNet-18 hyper-parameters (ResNet-50's were not published)", path
        assert cfg.paper_tau is None, path
        with pytest.raises(UserError, match="only for resnet18, not for resnet50"):
            config.resolve(path.stem, "resnet50", "flow", {"tau": "paper"})
    assert config.resolve("cifar10", "resnet18.tv_in1k", "flow", {"tau": "paper", "protocol": "paper"}).paper_tau == 0.1041
