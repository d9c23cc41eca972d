
import pytest

import sidda
from sidda import ConfigError, RunConfig
from sidda.configs import shipped_configs

CONFIGS = sorted(shipped_configs().values())


def test_public_api_resolves():
    assert all(hasattr(sidda, n) for n in sidda.__all__)


def test_dist_defaults_keep_one_cpu_process_as_it_was():
    dist = RunConfig().dist
    assert dist.da_scope == "global" and dist.timeout_s > 0
    assert dist.channels_last is None  # on only with CUDA and bf16; bf16 is ignored on the CPU


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_loads(path):
    cfg = RunConfig.from_yaml(path)
    assert cfg.train.warmup < cfg.train.epochs


def test_yaml_round_trip(tmp_path):
    cfg = RunConfig().override(["train.epochs=7", "model.name=d4", "train.milestones=[2, 5]",
                                "loss.blur=0.05", "train.early_stopping=null",
                                "train.augment=[flip, translate]", "loss.domain_bn=false",
                                "dist.channels_last=false"])
    assert cfg.train.epochs == 7 and cfg.model.name == "d4" and cfg.train.milestones == (2, 5)
    assert cfg.loss.blur == 0.05 and cfg.train.early_stopping is None
    assert cfg.train.augment == ("flip", "translate") and cfg.loss.domain_bn is False
    assert cfg.dist.da_scope == "global" and cfg.dist.channels_last is False
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    assert RunConfig.from_yaml(p) == cfg


@pytest.mark.parametrize("d, match", [
    ({"trian": {}}, "unknown config key"),
    ({"train": {"epoch": 3}}, r"unknown config key.*epochs"),
    ({"train": {"epochs": "ten"}}, "train.epochs must be int"),
    ({"train": {"epochs": 2.5}}, "train.epochs must be int"),
    ({"train": {"lr": -1.0}}, "lr must be a positive"),
    ({"train": {"epochs": 5, "warmup": 5}}, "shorter than train.epochs"),
    ({"train": {"milestones": "25,40"}}, "must be a list of int or null"),
    ({"model": {"name": "vgg"}}, "unknown model"),
    ({"loss": {"method": "mmd"}}, "loss.method"),
    ({"data": {"val_fraction": 1.5}}, "val_fraction"),
    ({"data": "x"}, "must be a mapping"),
    ({"train": {"early_stopping": True}}, "early_stopping"),
    ({"train": {"checkpoint_every": 0}}, "checkpoint_every must be >= 1"),
    ({"train": {"max_bad_steps": 0}}, "max_bad_steps must be >= 1"),
    ({"train": {"lr": float("inf")}}, "train.lr must be a finite number"),
    ({"train": {"weight_decay": float("nan")}}, "weight_decay must be a finite number"),
    ({"loss": {"blur": float("inf")}}, "loss.blur must be float or null"),
    ({"train": {"seed": -1}}, "train.seed must lie in"),
    ({"train": {"threads": 0}}, "threads"),
    ({"name": "../elsewhere"}, "plain folder name"),
    ({"name": ""}, "plain folder name"),
    ({"out_dir": " "}, "out_dir must be a folder path"),
    ({1: {}, "x": 2}, r"unknown config key\(s\) \['x', 1\]"),
    ({"train": {"milestones": [1, "2"]}}, "train.milestones must be a list of int"),
    ({"dist": {"da_scope": "local"}}, r"dist.da_scope must be 'global'.*got 'local'"),
    ({"train": {"augment": ["flip", "mixup"]}}, r"unknown augmentation 'mixup'.*translate"),
    ({"train": {"augment": "flip"}}, r"train.augment must be a list"),
    ({"train": {"augment": ["flip", "flip"]}}, r"augmentation twice"),
    ({"loss": {"method": "source_only", "domain_bn": True}},
     r"domain_bn .*not of 'source_only'.*adabn"),
    ({"loss": {"method": "adabn", "domain_bn": False}}, r"domain_bn .*not of 'adabn'"),
    ({"loss": {"method": "dan", "domain_bn": "yes"}}, r"loss.domain_bn must be bool or null"),
    ({"dist": {"bf16": "yes"}}, "dist.bf16 must be bool"),
    ({"dist": {"channels_last": "auto"}}, "dist.channels_last must be bool or null"),
    ({"dist": {"timeout_s": 0}}, "dist.timeout_s must be > 0"),
    ({"dist": {"nproc": 2}}, r"unknown config key.*'dist'.*da_scope"),
])
def test_bad_configs_say_what_is_wrong(d, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_dict(d)


def test_a_config_must_be_a_mapping():
    with pytest.raises(ConfigError, match="mapping of sections, got list"):
        RunConfig.from_dict([("train", {})])


def test_bad_overrides():
    with pytest.raises(ConfigError, match="unknown config key"):
        RunConfig().override(["train.epochz=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        RunConfig().override(["train.epochs"])


def test_a_str_key_takes_the_text_of_an_override():
    """``none``, ``null``, ``true`` and numbers are text for a key typed str; other keys keep
    reading them as None, booleans and numbers."""
    cfg = RunConfig().override(["data.normalize=none", "name=null", "out_dir='runs x'",
                                "train.device=cpu"])
    assert (cfg.data.normalize, cfg.name, cfg.out_dir) == ("none", "null", "runs x")
    for raw in ("none", "true", "7", "1e3"):
        assert RunConfig().override([f"name={raw}"]).name == raw
    cfg = RunConfig().override(["data.target_suffix=none", "train.early_stopping=None",
                                "dist.channels_last=TRUE", "train.epochs=7"])
    assert cfg.data.target_suffix is None and cfg.train.early_stopping is None
    assert cfg.dist.channels_last is True and cfg.train.epochs == 7
    with pytest.raises(ConfigError, match="data.normalize must be one of"):
        RunConfig().override(["data.normalize=nonsense"])


@pytest.mark.parametrize("text, shown", [("null", "null"), ("true", "true"), ("12", "12")])
def test_a_yaml_value_read_as_another_type_says_quote_it(tmp_path, text, shown):
    p = tmp_path / "c.yaml"
    p.write_text(f"name: {text}\n")
    with pytest.raises(ConfigError, match=rf"name must be str, got .*quote it \(name: '{shown}'\)"):
        RunConfig.from_yaml(p)
    p.write_text(f"name: '{text}'\n")
    assert RunConfig.from_yaml(p).name == text


def test_yaml_merge_keys_are_refused_by_name(tmp_path):
    p = tmp_path / "merge.yaml"
    p.write_text("base: &base {epochs: 2, warmup: 1}\ntrain: {<<: *base, batch_size: 16}\n")
    with pytest.raises(ConfigError) as info:
        RunConfig.from_yaml(p)
    text = str(info.value)
    assert text == (f"{p}: merge keys (<<) are not supported at line 2, column 9; write the "
                    "keys out in each section")


def test_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        RunConfig.from_yaml(tmp_path / "missing.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        RunConfig.from_yaml(p)
    assert "\n" not in str(info.value) and "line 2" in str(info.value)
    p.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="not valid YAML"):
        RunConfig.from_yaml(p)
