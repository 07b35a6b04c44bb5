"""Source recipes: each names a pinned hub location, its columns and family, and reads offline from local Parquet
fixtures laid out like that source (the `datasets` library writes them: the hub's {bytes, path} audio struct and
feature metadata); hf:// locations reach huggingface_hub's filesystem with the revision pinned."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import soundfile as sf
import yaml

from alarm.audio.decode import load_audio
from alarm.config import CorpusConfig, ParquetSourceConfig, load_config
from alarm.config.corpus import RECIPES_DIR, read_recipe, recipe_names
from alarm.corpus import locations
from alarm.corpus import rows as R
from alarm.corpus.manifest import read_source
from alarm.errors import ConfigError, InvalidInput

datasets = pytest.importorskip("datasets")
HF = re.compile(r"^hf://datasets/[^/@]+/[^/@]+@(?P<rev>[^/]+)/.+\.parquet$")


def clip(fmt: str = "FLAC", hz: float = 440.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * hz * np.arange(8000) / 16000), 16000, format=fmt)
    return buf.getvalue()


def fixture_rows(name: str, n: int = 3) -> tuple[dict, dict]:
    """(columns, features) of `n` rows laid out like recipe `name`'s source on the hub."""
    audio = [{"bytes": clip(hz=300 + 50 * i), "path": f"clip{i}.flac"} for i in range(n)]
    wav = datasets.Audio(decode=False)
    s = datasets.Value("string")
    i64 = datasets.Value("int64")
    tables = {
        "librispeech": ({"file": [f"{i}.flac" for i in range(n)], "audio": audio,
                         "text": ["HE HOPED THERE WOULD BE STEW", "FOR DINNER", "TURNIPS"][:n],
                         "speaker_id": [1089] * n, "chapter_id": [134686] * n,
                         "id": [f"1089-134686-{i:04d}" for i in range(n)]},
                        {"file": s, "audio": wav, "text": s, "speaker_id": i64, "chapter_id": i64, "id": s}),
        "esc50": ({"filename": [f"1-1000{i}-A-0.wav" for i in range(n)], "fold": [1] * n, "target": [0] * n,
                   "category": ["dog", "rooster", "rain"][:n], "esc10": [True] * n, "src_file": [1000] * n,
                   "take": ["A"] * n, "audio": audio},
                  {"filename": s, "fold": i64, "target": i64, "category": s, "esc10": datasets.Value("bool"),
                   "src_file": i64, "take": s, "audio": wav}),
        "audiocaps": ({"audiocap_id": [91139 + i for i in range(n)], "youtube_id": ["r1nicOVtvkQ"] * n,
                       "start_time": [130] * n, "caption": ["A man talks while a dog barks"] * n, "audio": audio},
                      {"audiocap_id": i64, "youtube_id": s, "start_time": i64, "caption": s, "audio": wav}),
        "clotho": ({"file": [f"clip_{i}.wav" for i in range(n)], "audio": audio,
                    "captions": [[f"caption {k} of clip {i}" for k in range(5)] for i in range(n)]},
                   {"file": s, "audio": wav, "captions": datasets.Sequence(s)}),
        "fsd50k": ({"fname": [64760 + i for i in range(n)], "labels": ["Electric_guitar,Guitar,Music"] * n,
                    "mids": ["/m/02sgy,/m/0342h,/m/04rlf"] * n, "mp3": [list(clip("MP3")) for _ in range(n)]},
                   {"fname": i64, "labels": s, "mids": s, "mp3": datasets.Sequence(datasets.Value("uint8"))}),
        "cremad": ({"audio": audio, "label": [0, 3, 5][:n]},
                   {"audio": wav, "label": datasets.ClassLabel(names=["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"])}),
        "musiccaps": ({"ytid": [f"-0Gj8-vB1q{i}" for i in range(n)], "start_s": [30] * n, "end_s": [40] * n,
                       "audioset_positive_labels": ["/m/0140xf"] * n, "aspect_list": ["['low quality', 'guitar']"] * n,
                       "caption": ["A low-quality recording of a strummed guitar"] * n, "author_id": [4] * n,
                       "is_balanced_subset": [False] * n, "is_audioset_eval": [True] * n, "audio": audio},
                      {"ytid": s, "start_s": i64, "end_s": i64, "audioset_positive_labels": s, "aspect_list": s,
                       "caption": s, "author_id": i64, "is_balanced_subset": datasets.Value("bool"),
                       "is_audioset_eval": datasets.Value("bool"), "audio": wav}),
        "asvspoof2019": ({"audio": audio, "label": ["spoof", "bonafide", "spoof"][:n],
                          "speaker_id": ["LA_0039"] * n, "attack_id": ["A11", "-", "A14"][:n],
                          "filename": [f"LA_E_283476{i}.flac" for i in range(n)]},
                         {"audio": wav, "label": s, "speaker_id": s, "attack_id": s, "filename": s}),
    }
    return tables[name]


def local_copy(name: str, tmp_path) -> str:
    """The recipe's path with its hub location replaced by a local folder holding the fixture, same file glob."""
    path = read_recipe(name)["path"]
    tail = HF.match(path) and path.split("@", 1)[1].split("/", 1)[1]
    folder = tmp_path / name / tail.rsplit("/", 1)[0]
    folder.mkdir(parents=True)
    columns, features = fixture_rows(name)
    audio_feature = {k: v for k, v in features.items() if isinstance(v, datasets.Audio)}
    plain = {k: (datasets.Features({"bytes": datasets.Value("binary"), "path": datasets.Value("string")})
                 if k in audio_feature else v) for k, v in features.items()}
    ds = datasets.Dataset.from_dict(columns, features=datasets.Features(plain))
    for k, v in audio_feature.items():  # cast, as push_to_hub stores it: {bytes, path} + the Audio feature
        ds = ds.cast_column(k, v)
    file_name = tail.rsplit("/", 1)[1].replace("*", "00000-of-00001")
    ds.to_parquet(str(folder / file_name))
    return str(tmp_path / name / tail)


def test_there_are_recipes_for_every_kind_the_paper_draws_on():
    names = recipe_names()
    assert len(names) >= 8
    families = {read_recipe(n)["family"] for n in names}
    assert {"transcript", "caption", "labels", "speaker", "music", "spoof"} <= families
    for name in names:
        recipe = read_recipe(name)
        m = HF.match(recipe["path"])
        assert m, f"{name}: {recipe['path']} is not a pinned hf:// Parquet location"
        about = recipe["about"]
        assert about["licence"] and "verified" in about, name
        source = {"name": name, **{k: v for k, v in recipe.items() if k != "about"}}
        if not re.fullmatch(r"[0-9a-f]{40}", m["rev"]):  # a branch: said so, and refused until given a commit
            assert "NOT a commit sha" in about["not verified"], name
            with pytest.raises(ValueError, match="a branch or tag, not a commit"):
                ParquetSourceConfig.model_validate(source)
            source["revision"] = "0" * 40
        ParquetSourceConfig.model_validate(source)


@pytest.mark.parametrize("name", recipe_names())
def test_recipe_reads_a_source_laid_out_like_its_hub_dataset(name, tmp_path):
    cfg = load_config(CorpusConfig, "tiny", [f"sources=[{{recipe: {name}, path: '{local_copy(name, tmp_path)}'}}]"],
                      section="corpus")
    (source,) = cfg.sources
    recipe = read_recipe(name)
    assert source.recipe == name and source.name == name and source.family == recipe["family"]
    rows = list(read_source(source))
    assert len(rows) == 3 and all(r["row_error"] is None for r in rows), rows[0]["row_error"]
    for row in rows:
        assert load_audio(row["audio_bytes"]).sample_rate == 16000
        assert list(json.loads(row["metadata"])) == list(recipe["columns"])  # only the mapped fields, in order
        described = R.describe_row(R.probe_row(row, 60.0))
        assert described["audio_error"] is None and described["audio_description"].startswith("[00:00-00:01]")
    id_column = recipe["id_column"]
    columns, _ = fixture_rows(name)
    expected = [str(v) for v in columns[id_column]] if id_column else ["000000", "000001", "000002"]
    assert [r["item_id"] for r in rows] == expected


def test_class_labels_from_the_files_features_and_what_each_family_reads(tmp_path):
    def described(name: str) -> list[str]:
        source = ParquetSourceConfig(name=name, recipe=name, **{**{k: v for k, v in read_recipe(name).items()
                                                                  if k != "about"}, "path": local_copy(name, tmp_path)})
        return [R.describe_row(R.probe_row(r, 60.0))["audio_description"] for r in read_source(source)]

    assert "(duration: 1s, emotion: ANG)" in described("cremad")[0]  # ClassLabel 0 -> its name
    assert described("librispeech")[0].startswith("[00:00-00:01] HE HOPED THERE WOULD BE STEW")
    assert "|dog|" in described("esc50")[0]
    assert "spoof" in described("asvspoof2019")[0].lower()


def test_recipe_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown sources preset 'nope'; valid presets: .*esc50"):
        load_config(CorpusConfig, "tiny", ["sources=[{recipe: nope}]"], section="corpus")
    with pytest.raises(ConfigError, match="pin the dataset's revision"):
        load_config(CorpusConfig, "tiny", ["sources=[{kind: parquet, name: x, path: 'hf://datasets/a/b/x.parquet'}]"],
                    section="corpus")
    path = local_copy("esc50", tmp_path)
    with pytest.raises(InvalidInput, match=r"lacks column\(s\) columns.label='categ'"):
        list(read_source(ParquetSourceConfig(name="e", path=path, id_column="filename", columns={"label": "categ"})))
    with pytest.raises(InvalidInput, match="matches no .parquet file"):
        list(read_source(ParquetSourceConfig(name="e", path=str(tmp_path / "none" / "*.parquet"))))
    preset = yaml.safe_load((RECIPES_DIR.parent / "corpus" / "paper.yaml").read_text())
    listed = {s["recipe"] for s in preset["sources"]}
    commented = set(re.findall(r"#\s*- \{recipe: (\w+)", (RECIPES_DIR.parent / "corpus" / "paper.yaml").read_text()))
    assert listed | commented == set(recipe_names())  # --preset paper lists every recipe


def test_an_hf_location_must_name_a_commit_and_a_revision_pins_one():
    sha = "2b82a0293dc872fe056dc1a5ed0bf7850a1329c8"
    for override in ["sources=[{recipe: clotho}]", "sources=[{recipe: esc50, path: 'hf://datasets/a/b@main/x.parquet'}]",
                     "sources=[{kind: manifest, name: m, path: 'hf://datasets/a/b@v1.0/m.jsonl'}]"]:
        with pytest.raises(ConfigError, match=r"sources\.0\.path: .* a branch or tag, not a commit.*dataset_info"):
            load_config(CorpusConfig, "tiny", [override], section="corpus")
    with pytest.raises(ConfigError, match=r"revision='refs/convert/parquet'\)\.sha"):  # the branch, unquoted
        load_config(CorpusConfig, "tiny", ["sources=[{recipe: clotho}]"], section="corpus")
    cfg = load_config(CorpusConfig, "tiny", [f"sources=[{{recipe: clotho, revision: {sha}}}]"], section="corpus")
    assert cfg.sources[0].path == f"hf://datasets/confit/clotho@{sha}/v1.0/train/*.parquet"
    again = CorpusConfig.model_validate(cfg.model_dump(mode="json"))  # as workers and a resume re-read it
    assert again.sources[0].path == cfg.sources[0].path
    with pytest.raises(ConfigError, match=r"sources\.0\.revision: String should match pattern"):
        load_config(CorpusConfig, "tiny", ["sources=[{recipe: clotho, revision: main}]"], section="corpus")
    with pytest.raises(ConfigError, match="applies to an hf://datasets/.* path; path is '/data/x.parquet'"):
        load_config(CorpusConfig, "tiny", [f"sources=[{{recipe: esc50, path: /data/x.parquet, revision: {sha}}}]"],
                    section="corpus")


class FakeHub:
    """Stands in for huggingface_hub.HfFileSystem: a local folder seen under 'datasets/OWNER/NAME@REV/...'."""

    def __init__(self, root, token):
        import fsspec

        self.root, self.token, self.local, self.calls = root, token, fsspec.filesystem("file"), []

    def _local(self, path: str) -> str:
        return str(self.root / path)

    def glob(self, path):
        self.calls.append(("glob", path))
        return [p.removeprefix(str(self.root) + "/") for p in self.local.glob(self._local(path))]

    def open(self, path, mode="rb"):
        self.calls.append(("open", path))
        return self.local.open(self._local(path), mode)


def test_hf_uris_reach_the_hub_filesystem_with_the_revision_pinned(tmp_path, monkeypatch):
    rev = "2b82a0293dc872fe056dc1a5ed0bf7850a1329c8"
    assert locations.parse_hf_uri(f"hf://datasets/ashraq/esc50@{rev}/data/*.parquet") == ("ashraq/esc50", rev,
                                                                                            "data/*.parquet")
    with pytest.raises(InvalidInput, match="pin the revision"):
        locations.parse_hf_uri("hf://datasets/ashraq/esc50/data/x.parquet")
    hub_dir = tmp_path / "hub"
    local = local_copy("esc50", hub_dir / "datasets" / "ashraq")  # .../datasets/ashraq/esc50/data/*.parquet
    (hub_dir / "datasets" / "ashraq" / "esc50").rename(hub_dir / "datasets" / "ashraq" / f"esc50@{rev}")
    assert local.endswith("esc50/data/*.parquet")
    hubs = []
    monkeypatch.setattr(locations, "hf_filesystem", lambda token=None: hubs.append(FakeHub(hub_dir, token))
                        or hubs[-1])
    monkeypatch.setattr("huggingface_hub.get_token", lambda: "hf_secret")
    rows = list(read_source(ParquetSourceConfig(name="esc50", path=f"hf://datasets/ashraq/esc50@{rev}/data/*.parquet",
                                                id_column="filename", columns={"label": "category"})))
    assert len(rows) == 3 and rows[0]["row_error"] is None
    assert all(h.token == "hf_secret" for h in hubs)  # the token a worker needs travels with the plan
    calls = [c for h in hubs for c in h.calls]
    assert calls[0] == ("glob", f"datasets/ashraq/esc50@{rev}/data/*.parquet")
    assert {p for op, p in calls if op == "open"} == {f"datasets/ashraq/esc50@{rev}/data/00000-of-00001.parquet"}


def test_the_real_hub_filesystem_takes_the_same_paths():
    fs = locations.hf_filesystem()
    assert type(fs).__name__ == "HfFileSystem"
    assert fs._strip_protocol("hf://datasets/ashraq/esc50@abc/data/x.parquet") == "datasets/ashraq/esc50@abc/data/x.parquet"
