"""Config composition and validation: one test per rule, each naming the key, the value and the rule."""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from sslsweep import config as C

from sslsweep.config import ConfigError, from_dictconfig
from sslsweep.data import read_facts
from sslsweep.validate import validate_against_data
from tests.conftest import encode_png, make_images


def check_data(cfg) -> None:
    """The pipeline's data stage: the dataset's facts against the config."""
    validate_against_data(cfg, read_facts(cfg.dataset))


def load(*overrides: str):
    with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
        return from_dictconfig(compose(config_name="config", overrides=list(overrides)))


def test_default_config_is_valid_and_has_three_methods() -> None:
    """The embedded default validates: digits, small CNN, simclr + rotation + none."""
    cfg = load()
    assert cfg.dataset.name == "digits" and cfg.encoder.name == "small_cnn"
    assert [m.name for m in cfg.methods] == ["simclr", "rotation", "none"]


def test_demo_experiment_composes_and_validates() -> None:
    """The demo overlay validates and sets the demo's small budget."""
    cfg = load("experiment=demo")
    assert cfg.search.num_samples == 4 and cfg.search.max_epochs == 8 and cfg.name == "demo"


def test_temperature_exists_only_for_contrastive_methods() -> None:
    """Temperature is in simclr's space only; the shared keys are in every pretraining method's space."""
    cfg = load()
    simclr, rotation, none = (cfg.method(n) for n in ("simclr", "rotation", "none"))
    assert "temperature" in simclr.searched and "temperature" not in rotation.space
    for key in ("lr", "weight_decay", "batch_size"):
        assert key in simclr.searched and key in rotation.searched
    assert none.space == {}


def test_method_override_narrows_a_range_or_fixes_a_value() -> None:
    """`method.simclr.space.temperature.high=0.5` narrows; a plain value fixes it (`+` because strength comes from the shared space)."""
    cfg = load("method.simclr.space.temperature.high=0.5", "+method.simclr.space.strength=1.0")
    simclr = cfg.method("simclr")
    assert simclr.space["temperature"].high == 0.5
    assert "strength" not in simclr.searched and simclr.fixed["strength"] == 1.0


def test_the_search_metric_is_named_by_the_selection_protocol() -> None:
    """ASHA, Optuna, the trials and the manifest all use this one name: the labeled metric under
    oracle, RankMe under label_free and under budget (the default), whose searches read no label."""
    assert load().metric_name == "rankme" and load().eval.selection == "budget"
    assert load("eval.selection=oracle").metric_name == "knn_top1"
    assert load("eval.selection=oracle", "eval.metric=linear").metric_name == "linear_top1"
    assert load("eval.selection=label_free").metric_name == "rankme"


def test_the_rules_confirmed_are_the_selection_then_compare_without_repeats() -> None:
    """eval.rules puts the sweep's own rule first; naming it in compare too confirms it once."""
    assert load().eval.rules == ("budget", "oracle", "label_free")
    assert load("eval.selection=oracle").eval.rules == ("oracle", "label_free")
    assert load("eval.compare=[]").eval.rules == ("budget",)


def test_a_sweep_saved_before_the_budget_rule_resumes_as_it_started() -> None:
    """A manifest config without eval.compare confirmed its eval.selection alone, and one without
    eval.selection was an oracle sweep: upgrade keeps that meaning (not today's defaults)."""
    from sslsweep.config import upgrade
    assert upgrade({"eval": {"metric": "knn"}})["eval"] == {"metric": "knn", "selection": "oracle", "compare": []}
    assert upgrade({"eval": {"selection": "label_free"}})["eval"] == {"selection": "label_free", "compare": []}
    assert upgrade({"eval": {"selection": "budget", "compare": ["oracle"]}})["eval"]["compare"] == ["oracle"]


def test_shared_space_override_reaches_every_method() -> None:
    """A key of search.space applies to every method that does not override it."""
    cfg = load("search.space.batch_size.choices=[16,32]")
    assert cfg.method("simclr").space["batch_size"].choices == (16, 32)
    assert cfg.method("rotation").space["batch_size"].choices == (16, 32)


RULES = [
    (["method.simclr.space.temperature.low=0"], r"method.simclr.space.temperature.low = 0: must be > 0 for a loguniform"),
    (["method.simclr.space.temperature=-0.1"], r"method.simclr.space.temperature = -0.1: the temperature must be > 0"),
    (["method.simclr.space.temperature.low=0.9", "method.simclr.space.temperature.high=0.5"], r"must have low < high"),
    (["method.simclr.space.temperature.type=gaussian"], r"temperature.type = 'gaussian': must be one of uniform"),
    (["search.space.batch_size.choices=[1,64]"], r"batch_size = 1: the batch size must be an integer >= 2"),
    (["search.space.batch_size.choices=[]"], r"batch_size.choices = \[\]: must be a non-empty list"),
    # the shared space is resolved into each method's space: the first method using it is named
    (["search.space.lr.low=-1"], r"method.simclr.space.lr.low = -1: must be > 0 for a loguniform range"),
    (["search.num_samples=0"], r"search.num_samples = 0: must be >= 1"),
    (["search.grace_period=30", "search.max_epochs=20"], r"search.grace_period = 30: must be <= search.max_epochs \(20\)"),
    (["search.reduction_factor=1"], r"search.reduction_factor = 1: must be >= 2"),
    (["search.eval_every=0"], r"search.eval_every = 0: must be in \[1, search.max_epochs \(20\)\]"),
    (["search.eval_every=21"], r"search.eval_every = 21: must be in \[1, search.max_epochs \(20\)\]"),
    (["search.searcher=grid"], r"search.searcher = 'grid': must be tpe or random"),
    (["search.scheduler=pbt"], r"search.scheduler = 'pbt': must be asha or fifo"),
    (["dataset.label_fractions=[0.5,1.5]"], r"dataset.label_fractions = 1.5: every label fraction must be in \(0, 1\]"),
    (["dataset.label_fractions=[0]"], r"dataset.label_fractions = 0: every label fraction must be in \(0, 1\]"),
    (["dataset.labels_per_class=[0]"], r"dataset.labels_per_class = 0: must be integers >= 1"),
    (["dataset.val_fraction=1.2"], r"dataset.val_fraction = 1.2: must be in \(0, 1\)"),
    (["dataset.name=mnist"], r"dataset.name = 'mnist': unknown dataset"),
    (["encoder.name=vit"], r"encoder.name = 'vit': unknown encoder"),
    (["resources.gpu=1.5"], r"resources.gpu = 1.5: a GPU fraction must be in \(0, 1\]"),
    (["resources.gpu=-0.5"], r"resources.gpu = -0.5: must be >= 0"),
    (["resources.cpu=0.5"], r"resources.cpu = 0.5: must be >= 1"),
    (["resources.workers=0"], r"resources.workers = 0: must be an integer >= 1$"),
    (["resources.workers=2", "resources.gpu=0.5", "method=[rotation]"],
     r"resources.gpu = 0.5: with resources.workers = 2 each rank needs whole GPUs"),
    (["resources.workers=2", "method=[gan]"], r"resources.workers = 2: method gan trains on one worker only: its "),
    (["resources.workers=3", "method=[rotation]", "search.space.batch_size={type:categorical,choices:[30,64]}"],
     r"method.rotation.space.batch_size = 64: must be a multiple of resources.workers = 3"),
    (["resources.workers=2", "method=[rotation]", "~search.space.batch_size", "+search.space.batch_size={type:int,low:16,high:64}"],
     r"method.rotation.space.batch_size = \{.*\}: with resources.workers = 2 the batch size must be fixed or categorical"),
    (["storage=ftp://host/runs"], r"storage = 'ftp://host/runs': unknown URI scheme"),
    (["eval.metric=auc"], r"eval.metric = 'auc': must be one of knn, linear"),
    (["eval.selection=best"], r"eval.selection = 'best': must be one of budget, label_free, oracle$"),
    (["eval.compare=[oracle,test]"], r"eval.compare = 'test': unknown selection rule; known: budget, label_free, oracle$"),
    (["eval.compare=[oracle,oracle]"], r"eval.compare = \['oracle', 'oracle'\]: names a rule twice; give each once$"),
    (["eval.compare=oracle"], r"eval.compare = 'oracle': must be a list of strings$"),
    (["confirm.seeds=0"], r"confirm.seeds = 0: must be >= 1"),
    (["confirm.finetune_epochs=0.5"], r"confirm.finetune_epochs = 0.5: must be a number >= 1$"),
    (["confirm.finetune_min_steps=0"], r"confirm.finetune_min_steps = 0: must be an integer >= 1$"),
    (["confirm.finetune_min_steps=200", "confirm.finetune_max_steps=100"],
     r"confirm.finetune_max_steps = 100: must be an integer >= confirm.finetune_min_steps \(200\)$"),
    (["confirm.finetune_lrs=[]"], r"confirm.finetune_lrs = \[\]: must be a non-empty list$"),
    (["confirm.finetune_lrs=[0.01,0]"], r"confirm.finetune_lrs = 0: every lr must be a number > 0$"),
    (["confirm.finetune_lrs=0.01"], r"confirm.finetune_lrs = 0.01: must be a list of numbers$"),
    (["+confirm.finetune_steps=150"], r"confirm.finetune_steps = 150: unknown key"),  # replaced by finetune_epochs
    (["trainer.device=tpu"], r"trainer.device = 'tpu': must be auto, cpu or cuda"),
    (["+search.typo=1"], r"search.typo = 1: unknown key"),
    (["~method.simclr.space.temperature"], r"method.simclr.space.temperature = None: required by this method"),
    (["confirm.epochs=2", "trainer.warmup_epochs=5"],
     r"trainer.warmup_epochs = 5: must be in \[0, 2\) \(the shorter of search.max_epochs 20 and confirm.epochs 2\)"),
    (["dataset.label_fractions=[0.1,0.1]"], r"dataset.label_fractions = \[0.1, 0.1\]: has a budget twice"),
    (["dataset.labels_per_class=[5,5]"], r"dataset.labels_per_class = \[5, 5\]: has a budget twice"),
    (["dataset.label_selection=[]"], r"dataset.label_selection = \[\]: give at least one of random, typical$"),
    (["dataset.label_selection=[random,densest]"],
     r"dataset.label_selection = 'densest': unknown label selection; known: random, typical$"),
    (["dataset.label_selection=[typical,typical]"],
     r"dataset.label_selection = \['typical', 'typical'\]: names a selection twice; give each once$"),
    (["dataset.label_selection=typical"], r"dataset.label_selection = 'typical': must be a list of strings$"),
    (["trainer.device=cuda"], r"trainer.device = 'cuda': cuda needs resources.gpu > 0"),
    (["+method.simclr.space.method=rotation"], r"method.simclr.space.method = 'rotation': a hyperparameter may not be named"),
    (["+search.space.seed=3"], r"search.space.seed = 3: a hyperparameter may not be named"),
    (["+method.simclr.space.temprature=0.3"],
     r"method.simclr.space.temprature = 0.3: method simclr has no such hyperparameter; known: batch_size, beta1, "
     r"crop_min, fne_k, lr, negatives, optimizer, proj_dim, strength, tau_plus, temperature, weight_decay$"),
    (["+search.space.lerning_rate={type:uniform,low:0.1,high:0.2}"],
     r"search.space.lerning_rate = \{'type': 'uniform', 'low': 0.1, 'high': 0.2\}: method simclr has no such"),
    # value types, checked before any rule compares them
    (["search.num_samples=2.0"], r"search.num_samples = 2.0: must be an integer$"),
    (["dataset.val_fraction=abc"], r"dataset.val_fraction = 'abc': must be a number"),
    (["dataset.hflip=no"], r"dataset.hflip = 'no': must be true or false"),
    (["trainer.compile=yes"], r"trainer.compile = 'yes': must be true or false"),
    (["dataset.label_fractions=0.1"], r"dataset.label_fractions = 0.1: must be a list of numbers"),
    (["dataset.split_seed=x"], r"dataset.split_seed = 'x': must be an integer"),
    (["seed=abc"], r"seed = 'abc': must be an integer"),
    (["method=[transfer]"], r"encoder.weights = None: method transfer needs pretrained weights"),
    (["method=[transfer]", "encoder.weights=/no/such/weights.pt"], r"encoder.weights = '/no/such/weights.pt': path does not exist"),
    (["method=[transfer]", "encoder.weights=ResNet18_Weights.IMAGENET1K_V1"],
     r"torchvision ResNet18_Weights need encoder=resnet18 with encoder.width=64"),
]


@pytest.mark.parametrize("overrides,message", RULES, ids=[r[0][0] for r in RULES])
def test_each_rule_names_key_value_and_rule(overrides: list[str], message: str) -> None:
    """Every broken rule raises ConfigError with one line: the key, the value and the rule."""
    with pytest.raises(ConfigError, match=message) as info:
        load(*overrides)
    assert "\n" not in str(info.value)


def test_missing_dataset_path_is_rejected(tmp_path: Path) -> None:
    """A parquet dataset whose path does not exist fails before anything is read."""
    with pytest.raises(ConfigError, match=r"dataset.path = '.*nope.parquet': path does not exist"):
        load("dataset=parquet", f"dataset.path={tmp_path / 'nope.parquet'}")


def test_batch_size_larger_than_train_pool_is_rejected() -> None:
    """A batch size above the train pool (from labels alone) fails before decoding."""
    cfg = load("dataset.max_images=100", "search.space.batch_size.choices=[32,512]")
    with pytest.raises(ConfigError, match=r"batch_size = 512: must be <= the train pool \(\d+ images\)"):
        check_data(cfg)


def test_labels_per_class_above_smallest_class_is_rejected() -> None:
    """labels_per_class larger than the smallest class of the train pool fails with that class size."""
    cfg = load("dataset.labels_per_class=[500]")
    with pytest.raises(ConfigError, match=r"dataset.labels_per_class = 500: must be <= the smallest class .*\(\d+ images\)"):
        check_data(cfg)


def test_no_test_set_at_all_is_rejected_before_training() -> None:
    """test_fraction = 0 with no test set of the dataset's own would leave the confirm phase nothing
    to measure: it fails from the labels alone, naming the key."""
    cfg = load("dataset.test_fraction=0")
    with pytest.raises(ConfigError, match=r"dataset.test_fraction = 0: must be > 0 when the dataset has no test set"):
        check_data(cfg)


def test_only_transfer_starts_from_the_given_weights() -> None:
    """encoder.weights reaches the transfer task only: `none` stays the random-init baseline."""
    from sslsweep.config import EncoderConfig
    from sslsweep.trainables.tasks import encoder_config_for

    cfg = EncoderConfig(weights="/some/file.pt")
    assert encoder_config_for("transfer", cfg).weights == "/some/file.pt"
    for method in ("none", "simclr", "rotation"):
        assert encoder_config_for(method, cfg).weights is None


def test_a_numeric_sweep_name_is_kept_as_text() -> None:
    """Hydra reads name=2024 as a number; it is a name all the same (and a saved sweep named so
    must still resume)."""
    assert load("name=2024").name == "2024"


def _folder(root: Path, per_class: dict[str, int]) -> Path:
    images, _ = make_images(sum(per_class.values()))
    k = 0
    for name, n in per_class.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            (root / name / f"{i}.png").write_bytes(encode_png(images[k]))
            k += 1
    return root


def test_an_image_folder_with_one_image_per_class_names_the_per_class_rule(tmp_path: Path) -> None:
    """Two classes of one image each cannot give every class a train, validation and test image:
    one line naming the rule and the classes short of it (it was a numpy traceback in the splits)."""
    root = _folder(tmp_path / "imgs", {"cat": 1, "dog": 1})
    cfg = load("dataset=imagefolder", f"dataset.path={root}")
    with pytest.raises(ConfigError, match=r"dataset.path = '.*imgs': needs at least 3 images per class for the "
                                          r"train, validation and test splits; too few in cat \(1\), dog \(1\)"):
        check_data(cfg)


def test_an_image_folder_with_one_class_names_the_two_class_rule(tmp_path: Path) -> None:
    """One class is no classification problem: one line naming the rule (it was a batch-size error)."""
    root = _folder(tmp_path / "imgs", {"cat": 30})
    cfg = load("dataset=imagefolder", f"dataset.path={root}")
    with pytest.raises(ConfigError, match=r"dataset.path = '.*imgs': needs at least 2 classes; the data has 1 "
                                          r"\(cat: 30 images\)"):
        check_data(cfg)


def test_enough_images_per_class_passes_the_data_rules(tmp_path: Path) -> None:
    """Three images of each of two classes are enough for the three splits (the rule is no stricter)."""
    root = _folder(tmp_path / "imgs", {"cat": 3, "dog": 3})
    check_data(load("dataset=imagefolder", f"dataset.path={root}", "search.space.batch_size.choices=[2]",
                    "dataset.label_fractions=[1.0]"))


# Where the composed default differs from the dataclass's default on purpose, and why.
DELIBERATE = {("dataset", "hflip"): "digits (the default dataset) are not mirror-symmetric: conf/dataset/digits.yaml"}


def test_the_yaml_and_the_dataclasses_agree_on_every_default() -> None:
    """A default is written in conf/*.yaml (what Hydra composes) and in the dataclass field (what a
    test or a library user gets from ``TrainerConfig()``): the two must agree, key by key, except
    the deliberate dataset-specific ones listed above."""
    with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
        raw = OmegaConf.to_container(compose(config_name="config"), resolve=True)
    differ = {}
    for section, cls in (("dataset", C.DatasetConfig), ("encoder", C.EncoderConfig), ("search", C.SearchConfig),
                         ("resources", C.ResourcesConfig), ("trainer", C.TrainerConfig), ("eval", C.EvalConfig),
                         ("confirm", C.ConfirmConfig)):
        for f in fields(cls):
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            composed = raw[section].get(f.name, "<absent from the yaml>")
            composed = tuple(composed) if isinstance(composed, list) else composed
            if composed != default:
                differ[(section, f.name)] = (default, composed)
    assert set(differ) == set(DELIBERATE), differ


def test_false_negative_cancellation_must_leave_every_anchor_a_negative() -> None:
    """fne_k above 2 x batch_size - 3 at the smallest batch size would cancel every negative: refused
    before Ray starts; the same fne_k with the standard loss (which ignores it) passes."""
    bad = ("method=[simclr]", "method.simclr.space.negatives=eliminate", "method.simclr.space.fne_k=200",
           "search.space.batch_size.choices=[64,128]")
    with pytest.raises(ConfigError, match=r"method.simclr.space.fne_k = 200: must leave each anchor a negative: "
                                          r"at most 2 x batch_size - 3 = 125 \(the smallest batch size is 64\)"):
        load(*bad)
    load("method=[simclr]", "method.simclr.space.fne_k=200", "search.space.batch_size.choices=[64,128]")


def test_a_config_saved_before_the_fine_tune_keys_changed_still_loads_with_its_settings() -> None:
    """A sweep started with confirm.finetune_steps / confirm.finetune_lr resumes as it started: a
    fixed number of steps and a one-value lr grid (no lr search); without upgrade it is refused."""
    raw = OmegaConf.to_container(compose_raw(), resolve=True)
    raw["confirm"] = {k: v for k, v in raw["confirm"].items()
                      if k not in ("finetune_epochs", "finetune_min_steps", "finetune_max_steps", "finetune_lrs")}
    raw["confirm"].update(finetune_steps=150, finetune_lr=0.01)
    with pytest.raises(ConfigError, match=r"confirm.finetune_lr = 0.01: unknown key"):
        from_dictconfig(raw)
    cfg = from_dictconfig(C.upgrade(raw))
    assert (cfg.confirm.finetune_min_steps, cfg.confirm.finetune_max_steps) == (150, 150)
    assert tuple(cfg.confirm.finetune_lrs) == (0.01,)


def compose_raw():
    with initialize_config_module(config_module="sslsweep.conf", version_base="1.3"):
        return compose(config_name="config")


def test_label_free_with_a_labelled_rule_to_compare_warns_that_labels_are_read(caplog: pytest.LogCaptureFixture) -> None:
    """label_free promises no label before confirm; comparing with oracle breaks that in the trials,
    so validation says so (one warning), and says nothing with eval.compare=[]."""
    with caplog.at_level("WARNING"):
        load("eval.selection=label_free", "eval.compare=[]")
    assert "read labels" not in caplog.text
    with caplog.at_level("WARNING"):
        load("eval.selection=label_free")
    assert "read labels to report the oracle signal" in caplog.text
