import json
import subprocess
import sys

import pytest

from alarm.config import (
    ConfigError,
    CorpusConfig,
    CrossAttentionFusionConfig,
    ModelConfig,
    ServeConfig,
    TrainConfig,
    load_config,
    preset_names,
    write_config,
)
from alarm.encoders import FAMILIES

REAL_PRESETS = ["alarm-ca", "alarm-p", "al-whisper"]


def test_required_presets_exist():
    assert {"tiny", *REAL_PRESETS} <= set(preset_names("model"))


@pytest.mark.parametrize("name", preset_names("model"))
def test_every_preset_validates(name):
    cfg = load_config(ModelConfig, name)
    assert cfg.name == name
    assert set(cfg.encoders) <= set(FAMILIES)


@pytest.mark.parametrize("name", REAL_PRESETS)
def test_real_presets_pin_revisions(name):
    cfg = load_config(ModelConfig, name)
    for where, ck, rev in [("llm", cfg.llm.checkpoint, cfg.llm.revision)] + [
        (f"encoders.{k}", e.checkpoint, e.revision) for k, e in cfg.encoders.items()
    ]:
        assert rev and len(rev) == 40 and int(rev, 16) >= 0, f"{name}: {where} ({ck}) must pin a commit sha"


def test_paper_numbers_in_alarm_ca():
    cfg = load_config(ModelConfig, "alarm-ca")
    assert cfg.llm.hidden_size == 2560 and cfg.llm.vocab_size == 151936
    assert cfg.encoders["whisper"].layers == [7, 15, 23, 31]
    assert cfg.encoders["w2vbert"].layers == [6, 10, 15, 20, 24]
    assert cfg.encoders["muq"].layers == [4, 8, 12]
    assert cfg.encoders["sslam"].layers == [3, 7, 11]
    assert cfg.fusion == CrossAttentionFusionConfig(order=["w2vbert", "muq", "sslam"])
    p = load_config(ModelConfig, "alarm-p")
    assert p.fusion.kind == "perceiver" and p.fusion.num_latents == 20 and p.fusion.latent_dim == 768
    assert {k for k, e in p.encoders.items() if e.adapter.kind == "identity"} == {"w2vbert", "muq", "sslam"}


def test_overrides_parse_yaml_values():
    cfg = load_config(ModelConfig, "tiny", ["encoders.whisper.layers=[0, 2]", "fusion.dropout=0.25",
                                            "audio.max_duration_s=30"])
    assert cfg.encoders["whisper"].layers == [0, 2]
    assert cfg.fusion.dropout == 0.25
    assert cfg.audio.max_duration_s == 30.0


def test_switching_kind_drops_old_settings():
    cfg = load_config(ModelConfig, "tiny", ["fusion.kind=sum"])
    assert cfg.fusion.kind == "sum"


def test_null_override_removes_encoder():
    cfg = load_config(ModelConfig, "tiny", ["encoders.muq=null", "fusion.order=[w2vbert, sslam]"])
    assert set(cfg.encoders) == {"whisper", "w2vbert", "sslam"}


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("fusion.d_modl=3", "valid keys under fusion: kind, main, order, d_model"),
        ("encoders.whisper.adaptr.kind=mlp", "valid keys under encoders.whisper: checkpoint"),
        ("encoders.beats.layers=[1]", "valid keys under encoders: whisper, w2vbert, muq, sslam"),
        ("bogus=1", "valid keys under <top level>: name, llm"),
        ("llm.hidden_size.x=1", "plain value"),
        ("nokey", "key.sub=value"),
    ],
)
def test_unknown_keys_name_the_valid_ones(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(ModelConfig, "tiny", [override])
    assert fragment in str(e.value)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["fusion.order=[muq]"], "must name exactly the configured encoders"),
        (["fusion.kind=sum", "encoders.muq.adapter.kind=identity"], "only valid with fusion.kind=perceiver"),
        (["encoders.whisper.layers=[1, 1]"], "distinct"),
        (["encoders.whisper.adapter_frozen=true"], "needs adapter_init"),
        (["llm.hidden_size=-1"], "llm.hidden_size"),
        (["encoders.muq.adapter.kind=identity"], "cross_attention needs projecting adapters"),
    ],
)
def test_cross_field_errors_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(ModelConfig, "tiny", overrides)
    assert fragment in str(e.value)


def test_unknown_preset_lists_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="valid presets: .*alarm-ca"):
        load_config(ModelConfig, "alarm-xx")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nllm: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(ModelConfig, bad)


def test_preset_file_with_base(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("base: tiny\nname: mine\nfusion: {kind: sum}\n")
    assert load_config(ModelConfig, p).fusion.kind == "sum"


def test_write_config_round_trips(tmp_path):
    cfg = load_config(ModelConfig, "tiny-p")
    path = write_config(cfg, tmp_path / "out")
    assert ModelConfig.model_validate(json.loads(path.read_text())) == cfg
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["config.json"]  # no temp files left


def test_print_config_command():
    out = subprocess.run([sys.executable, "-m", "alarm.config", "--preset", "al-whisper", "fusion.kind=sum"],
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["encoders"].keys() == {"whisper"}
    bad = subprocess.run([sys.executable, "-m", "alarm.config", "fusion.nope=1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "valid keys under fusion" in bad.stderr


@pytest.mark.parametrize("cls, section", [(CorpusConfig, "corpus"), (TrainConfig, "train"), (ServeConfig, "serve")])
def test_the_old_top_level_ray_keys_name_the_new_ones(cls, section, tmp_path):
    with pytest.raises(ConfigError, match=r"'ray_address' was renamed to 'ray.address': write ray.address="):
        load_config(cls, "tiny", ["ray_address=127.0.0.1:6379"], section=section)
    old = tmp_path / "old.yaml"
    old.write_text("base: tiny\nray_num_cpus: 4\n")
    with pytest.raises(ConfigError, match=r"'ray_num_cpus' was renamed to 'ray.num_cpus'.*`ray: \{num_cpus: \.\.\.\}`"):
        load_config(cls, old, section=section)
    cfg = load_config(cls, "tiny", ["ray.address=ray://head:10001"], section=section)
    assert cfg.ray.address == "ray://head:10001" and cfg.ray.num_cpus == 4 and not cfg.ray.dashboard


@pytest.mark.parametrize("overrides, key", [
    (["fusion.dropout=2"], "fusion.dropout"),
    (["encoders.whisper.adapter.width=0"], "encoders.whisper.adapter.width"),
    (["fusion.kind=perceiver", "fusion.num_latents=0"], "fusion.num_latents"),
])
def test_errors_name_the_dotted_key_without_union_tags(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(ModelConfig, "tiny", overrides)
    lines = str(e.value).splitlines()[1:]
    assert any(line.strip().startswith(f"{key}:") for line in lines), str(e.value)
    assert not any(f".{tag}." in str(e.value) for tag in ("cross_attention", "perceiver", "downsample"))


def test_a_union_tag_is_dropped_only_where_the_schema_has_the_union():
    with pytest.raises(ConfigError) as e:  # a list of sources: the tag follows the index
        load_config(CorpusConfig, "tiny", ["sources.0.num_clips=0"], section="corpus")
    assert "  sources.0.num_clips:" in str(e.value)


def test_every_union_tag_is_a_kind_literal_of_its_members():
    from alarm.config.keys import union_members
    from alarm.config.model import AdapterConfig, FusionConfig

    assert set(union_members(FusionConfig)) == {"sum", "cross_attention", "perceiver"}
    assert set(union_members(AdapterConfig)) == {"downsample", "mlp", "identity"}
    assert union_members(int | None) == {}


def test_every_commands_default_run_has_a_folder_of_its_own():
    """`python -m alarm.generate` then `python -m alarm.train`, both without arguments, as README runs them: the
    training run reads the corpus run and writes elsewhere (the same folder refused to resume as a corpus)."""
    import posixpath

    corpus = load_config(CorpusConfig, "tiny", section="corpus")
    train = load_config(TrainConfig, "tiny", section="train")
    corpus_dir = posixpath.join(corpus.output, corpus.run_id)
    train_dir = posixpath.join(train.output, train.run_id)
    assert train.corpus == corpus_dir and train_dir != corpus_dir
    toy_corpus = load_config(CorpusConfig, "toy", section="corpus")
    toy_train = load_config(TrainConfig, "toy", section="train")
    folders = {corpus_dir, train_dir, posixpath.join(toy_corpus.output, toy_corpus.run_id),
               posixpath.join(toy_train.output, toy_train.run_id)}
    assert len(folders) == 4, folders
