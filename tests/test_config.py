"""seal.config: typed defaults, YAML files, dotted overrides, errors that name the key, saved configs."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from seal.bench.knowledge import KnowledgeBenchConfig
from seal.config import (
    ConfigError,
    EvalConfig,
    InnerConfig,
    LearnConfig,
    ModelConfig,
    apply_overrides,
    from_dict,
    knowledge_sampling,
    load_config,
    save_config,
    shipped_configs,
    to_dict,
)


def test_defaults_are_the_dataclass_defaults_and_independent():
    a, b = load_config(LearnConfig), load_config(LearnConfig)
    assert a == LearnConfig()
    assert a.model == ModelConfig() and a.sampling == knowledge_sampling()
    assert a.inner == InnerConfig() and a.eval == EvalConfig()
    assert isinstance(a.inner.target_modules, list) and a.inner.target_modules
    a.inner.target_modules.append("lm_head")  # mutable defaults are not shared between configs
    assert "lm_head" not in b.inner.target_modules
    assert "lm_head" not in LearnConfig().inner.target_modules


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("gate: false\ninner:\n  lr: 0.01\n  epochs: 3\nsampling:\n  num_samples: 4\n", encoding="utf-8")
    cfg = load_config(LearnConfig, path)
    assert (cfg.gate, cfg.inner.lr, cfg.inner.epochs, cfg.sampling.num_samples) == (False, 0.01, 3, 4)
    assert cfg.inner.rank == InnerConfig().rank  # untouched keys keep their defaults
    cfg = load_config(LearnConfig, path, ["inner.lr=3e-4", "inner.epochs=7", "gate=true", "model.name=my/model"])
    assert cfg.inner.lr == pytest.approx(3e-4) and isinstance(cfg.inner.lr, float)
    assert cfg.inner.epochs == 7 and cfg.gate is True and cfg.model.name == "my/model"
    assert cfg.sampling.num_samples == 4  # from the file, not overridden
    assert load_config(LearnConfig, path, ["inner.lr=1e-3", "inner.lr=2e-3"]).inner.lr == pytest.approx(2e-3)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("inner.target_modules=[q_proj, v_proj]", ["q_proj", "v_proj"]),
        ("inner.target_modules=q_proj,v_proj", ["q_proj", "v_proj"]),
        ("inner.target_modules=o_proj", ["o_proj"]),
    ],
)
def test_list_overrides(override, expected):
    assert load_config(LearnConfig, overrides=[override]).inner.target_modules == expected


@pytest.mark.parametrize("raw, expected", [("false", False), ("true", True), ("False", False), ("yes", True)])
def test_bool_overrides(raw, expected):
    assert load_config(LearnConfig, overrides=[f"gate={raw}"]).gate is expected


def test_int_to_float_and_number_to_string():
    cfg = load_config(LearnConfig, overrides=["sampling.temperature=1", "model.name=123"])
    assert cfg.sampling.temperature == 1.0 and isinstance(cfg.sampling.temperature, float)
    assert cfg.model.name == "123"


def test_override_builds_nested_sections_into_a_plain_mapping():
    data = apply_overrides({"a": {"x": 1}}, ["a.b.c=2", "a.y=[1, 2]", "z="])
    assert data == {"a": {"x": 1, "b": {"c": 2}, "y": [1, 2]}, "z": ""}


@pytest.mark.parametrize(
    "overrides, names",
    [
        (["inner.lrr=1e-3"], ["inner", "lrr"]),
        (["nope=1"], ["nope"]),
        (["sampling.top_k=5"], ["sampling", "top_k"]),
        (["inner.epochs=three"], ["inner.epochs"]),
        (["inner.epochs=2.5"], ["inner.epochs"]),
        (["inner.rank=true"], ["inner.rank"]),
        (["gate=1"], ["gate"]),
        (["gate=maybe"], ["gate"]),
        (["inner.lr=fast"], ["inner.lr"]),
        (["inner.lr_schedule=exponential"], ["inner.lr_schedule", "cosine"]),
        (["inner.target_modules=5"], ["inner.target_modules"]),
        (["inner=3"], ["inner"]),
        (["gate.x=1"], ["gate"]),
        (["model.name=null"], ["model.name"]),
        (["inner.target_modules=[q_proj, [v]]"], ["inner.target_modules[1]"]),
    ],
)
def test_bad_overrides_name_the_key(overrides, names):
    with pytest.raises(ConfigError) as err:
        load_config(LearnConfig, overrides=overrides)
    for name in names:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "override",
    ["inner.epochs=0", "inner.lr=0", "inner.lr=-1e-3", "inner.rank=0", "inner.batch_size=0", "inner.dropout=1.5",
     "sampling.num_samples=0", "sampling.max_new_tokens=0", "sampling.top_p=0", "sampling.top_p=1.5",
     "sampling.temperature=-1", "sampling.batch_size=0", "eval.max_new_tokens=0", "eval.batch_size=0",
     "inner.lr=.nan", "inner.warmup=1", "inner.warmup=-0.1",
     "sampling.answers=bogus", "sampling.answers=checked", "sampling.pieces=0"],  # checked answers need structured self-QA
)
def test_out_of_range_values_are_config_errors(override):
    key = override.partition("=")[0]
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(LearnConfig, overrides=[override])


def test_open_book_answers_with_structured_sampling_load():
    cfg = load_config(LearnConfig, overrides=["sampling.structured=true", "sampling.answers=checked"])
    assert (cfg.sampling.structured, cfg.sampling.answers) == (True, "checked")


@pytest.mark.parametrize("override", ["noequals", "=3", "inner..lr=1"])
def test_malformed_override(override):
    with pytest.raises(ConfigError):
        load_config(LearnConfig, overrides=[override])


def test_override_into_a_scalar_from_the_file_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("gate: true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="gate"):
        load_config(LearnConfig, path, ["gate.inner=1"])


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("- a\n- b\n", "mapping"),
        ("inner: [1, 2]\n", "config.inner"),
        ("inner:\n  lr: [\n", "c.yaml:3:1: invalid YAML"),
        ("inner:\n  bogus: 1\n", "bogus"),
    ],
)
def test_bad_files(tmp_path, text, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(LearnConfig, path)


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(ConfigError, match="no config file .*missing.yaml; shipped configs: smollm2-135m"):
        load_config(LearnConfig, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"gate: \xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(LearnConfig, bad)


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# nothing\n", encoding="utf-8")
    assert load_config(LearnConfig, path) == LearnConfig()


def test_saved_config_reloads_identically(tmp_path):
    cfg = load_config(LearnConfig, overrides=[
        "inner.lr=3e-4", "inner.target_modules=[q_proj, v_proj]", "gate=false", "model.name=0.5",
        "sampling.temperature=0.7", "seed=11", "model.device=cpu",
    ])
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert saved == to_dict(cfg)
    assert saved["model"]["name"] == "0.5"  # a string that looks like a number stays a string
    again = load_config(LearnConfig, path)
    assert again == cfg
    assert dataclasses.asdict(again) == dataclasses.asdict(cfg)
    assert from_dict(LearnConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize("name", shipped_configs())
def test_shipped_configs_load_by_name_for_learn_and_bench(name):
    for cls in (LearnConfig, KnowledgeBenchConfig):
        cfg = load_config(cls, name, ["inner.rank=8"])
        assert cfg.model.name == name  # each shipped config is named after the model it was tuned for
        assert cfg.inner.rank == 8 and cfg.inner.lr != cls().inner.lr


def test_a_file_in_the_working_directory_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2-135m-instruct").write_text("seed: 7\n", encoding="utf-8")
    cfg = load_config(LearnConfig, "smollm2-135m-instruct")
    assert cfg.seed == 7 and cfg.model.name == LearnConfig().model.name


def test_a_partial_override_of_a_nested_config_keeps_the_parents_own_defaults():
    from seal.bench.forgetting import ForgettingBenchConfig
    from seal.datapaths import data_file

    cfg = load_config(ForgettingBenchConfig, None, ["memory.probe.candidates=20", "memory.model.name=tiny"])
    assert cfg.memory.probe.data == data_file("squad/squad_val.json")  # the benchmark's default probe source survives a sibling override
    assert cfg.memory.probe.candidates == 20 and cfg.memory.model.name == "tiny"
    assert load_config(ForgettingBenchConfig, None, ["memory.probe.data="]).memory.probe.data == ""


def test_restem_trains_the_self_edit_that_the_knowledge_commands_write():
    from seal.memory.config import MemoryConfig
    from seal.train import TrainKnowledgeConfig

    cfg = load_config(TrainKnowledgeConfig, None, ["restem.sampling.temperature=0.7"])
    writers = (LearnConfig(), KnowledgeBenchConfig(), MemoryConfig())
    assert all((w.prompt, w.qa_format, w.sampling, w.inner.lr) == (cfg.prompt, cfg.qa_format, knowledge_sampling(),
                                                                   cfg.restem.inner.lr) for w in writers)
    assert dataclasses.replace(cfg.restem.sampling, temperature=1.0) == knowledge_sampling()  # the override kept the rest
