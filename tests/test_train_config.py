"""Bad training configs fail with a clear message before any training starts; example configs
in configs/ are valid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from modgap.cli import main
from modgap.errors import InputError
from modgap.io.features import write_features
from modgap.train import ConfigError, config_from_dict, load_config, write_toy_precomp
from modgap.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy_precomp(
        tmp_path_factory.mktemp("toy") / "p", {"train": 10, "dev": 4, "test": 4}, 3, 8
    )


def base(toy) -> dict:
    return {
        "threads": 1,
        "data": {"format": "precomp", "path": str(toy)},
        "model": {"joint_dim": 8, "word_dim": 4},
        "optim": {"epochs": 1, "batch_size": 8},
        "eval": {"measures": []},
    }


def with_(cfg: dict, section: str, **kw) -> dict:
    return {**cfg, section: {**cfg.get(section, {}), **kw}}


@pytest.mark.parametrize(
    "section,change,message",
    [
        ("loss", {"matching": "hinge"}, "loss.matching: unknown value 'hinge'.*triplet, infonce"),
        ("loss", {"alpha": -0.1}, r"loss.alpha: weights must be >= 0, got -0.1"),
        ("loss", {"gamma": -1}, r"loss.gamma: weights must be >= 0"),
        ("loss", {"mask_rule": "median"}, "loss.mask_rule: unknown value 'median'"),
        ("loss", {"temperature": 0}, "loss.temperature: must be > 0"),
        ("loss", {"alpah": 1.0}, r"loss.alpah: unknown option \(did you mean 'alpha'\?\)"),
        ("loss", {"alpha": "big"}, "loss.alpha: expected float, got 'big'"),
        ("loss", {"max_violation": "yes"}, "loss.max_violation: expected true or false"),
        ("optim", {"batch_size": 1}, "optim.batch_size: must be >= 2"),
        ("optim", {"lr": 0}, "optim.lr: must be > 0"),
        ("optim", {"schedule": "linear"}, "optim.schedule: unknown value 'linear'"),
        ("optim", {"epochs": 2.5}, "optim.epochs: expected an integer, got 2.5"),
        ("model", {"image_pooling": "sum"}, "model.image_pooling: unknown value 'sum'"),
        ("model", {"freeze_image": True, "freeze_text": True}, "leave nothing to train"),
        ("data", {"format": "csv"}, "data.format: unknown value 'csv'"),
        ("data", {"folds": 1}, "data.folds: must be 0 .* or >= 2"),
        ("eval", {"relevance": "fuzzy"}, "eval.relevance: unknown value 'fuzzy'"),
        ("checkpoint", {"every_steps": -1}, "checkpoint.every_steps: must be >= 0"),
    ],
)
def test_bad_values_name_the_key(toy, section, change, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(with_(base(toy), section, **change))


def test_unknown_top_level_key_and_section_type(toy):
    with pytest.raises(ConfigError, match=r"^sed: unknown option \(did you mean 'seed'\?\)"):
        config_from_dict({**base(toy), "sed": 1})
    with pytest.raises(ConfigError, match=r"loss: expected a mapping of options, got list"):
        config_from_dict({**base(toy), "loss": [1, 2]})


def test_yaml_numbers_without_dot_are_numbers(toy):
    cfg = config_from_dict(with_(base(toy), "optim", lr="2e-4"))
    assert cfg.optim.lr == 2e-4


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_config(bad)
    neg = tmp_path / "neg.yaml"
    neg.write_text("data: {path: x}\nloss: {beta: -2}\n")
    with pytest.raises(ConfigError, match=r"neg.yaml: loss.beta: weights must be >= 0"):
        load_config(neg)


def test_relative_data_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub/c.yaml"
    p.write_text("data: {path: ../d.npz, test_path: t.npz}\nout: runs/x\n")
    cfg = load_config(p)
    assert cfg.data.path == str((tmp_path / "d.npz").resolve())
    assert cfg.data.test_path == str((tmp_path / "sub/t.npz").resolve())
    assert cfg.out == "runs/x"


# -- checks against the data, before training ----------------------------------------------------


def _no_training(tmp_path: Path) -> None:
    assert not (tmp_path / "checkpoints").exists()


def test_missing_files(toy, tmp_path):
    cfg = config_from_dict(with_(base(toy), "data", path=str(tmp_path / "absent")))
    with pytest.raises(InputError, match=r"precomputed-feature folder not found"):
        Trainer(cfg, tmp_path / "o", progress=False)
    cfg = config_from_dict(with_(base(toy), "data", test_split="testall"))
    with pytest.raises(InputError, match=r"testall_ims.npy: missing file for split 'testall'"):
        Trainer(cfg, tmp_path / "o", progress=False)
    cfg = config_from_dict(
        {**base(toy), "data": {"format": "embeddings", "path": str(tmp_path / "x.npz")}}
    )
    with pytest.raises(InputError, match=r"x.npz: no such file"):
        Trainer(cfg, tmp_path / "o", progress=False)
    _no_training(tmp_path / "o")


def test_mismatched_caption_count(toy, tmp_path):
    import shutil

    bad = tmp_path / "p"
    shutil.copytree(toy, bad)
    lines = (bad / "dev_caps.txt").read_text().splitlines()
    (bad / "dev_caps.txt").write_text("\n".join(lines[:-1]) + "\n")
    cfg = config_from_dict(with_(base(toy), "data", path=str(bad)))
    with pytest.raises(InputError, match=r"19 captions for 4 images .* exactly 5 per image \(20\)"):
        Trainer(cfg, tmp_path / "o", progress=False)
    _no_training(tmp_path / "o")


def test_mismatched_feature_dims(toy, tmp_path):
    cfg = config_from_dict(with_(base(toy), "model", image_dim=2048))
    with pytest.raises(ConfigError, match=r"model.image_dim: config says 2048 but .* width 8"):
        Trainer(cfg, tmp_path / "o", progress=False)
    rng = np.random.default_rng(0)
    tr, te = tmp_path / "tr.npz", tmp_path / "te.npz"
    write_features(tr, image_features=rng.random((20, 6)), text_features=rng.random((20, 5)))
    write_features(te, image_features=rng.random((5, 7)), text_features=rng.random((5, 5)))
    feats = {**base(toy), "data": {"format": "features", "path": str(tr), "test_path": str(te)}}
    with pytest.raises(InputError, match=r"te.npz: test image features have width 7 but training"):
        Trainer(config_from_dict(feats), tmp_path / "o", progress=False)
    ident = with_(feats, "model", identity_init=True, joint_dim=6)
    ident["data"] = {"format": "features", "path": str(tr), "val": 2, "test": 2}
    with pytest.raises(ConfigError, match=r"identity_init: the text features have width 5 but"):
        Trainer(config_from_dict(ident), tmp_path / "o", progress=False)
    _no_training(tmp_path / "o")


def test_features_file_errors(tmp_path):
    from modgap.io.features import load_features

    p = tmp_path / "f.npz"
    np.savez(p, image_features=np.ones((3, 2), np.float32))
    with pytest.raises(InputError, match=r"missing key.*text_features"):
        load_features(p)
    write_features(p, image_features=np.ones((3, 2)), text_features=np.ones((4, 2)))
    with pytest.raises(InputError, match=r"3 images but 4 texts: row-by-row pairing needs equal"):
        load_features(p)


def test_class_relevance_needs_labels(toy, tmp_path):
    cfg = config_from_dict(with_(base(toy), "eval", relevance="class"))
    with pytest.raises(ConfigError, match=r"'class' needs image labels"):
        Trainer(cfg, tmp_path / "o", progress=False)


def test_unknown_measure_is_a_config_error(toy, tmp_path):
    cfg = config_from_dict(with_(base(toy), "eval", measures=["centroid_gap", "wobble"]))
    with pytest.raises(ConfigError, match=r"eval.measures: .*wobble"):
        Trainer(cfg, tmp_path / "o", progress=False)


def test_cli_bad_config_exit_code_2(toy, tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(with_(base(toy), "loss", matching="contrastive")))
    assert main(["train", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "loss.matching: unknown value 'contrastive'" in err
    _no_training(tmp_path / "o")


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_example_configs_are_valid(name):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.name == Path(name).stem
    assert cfg.out.startswith("out/")


def test_cuda_requested_without_cuda(toy, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    cfg = config_from_dict({**base(toy), "device": "cuda"})
    with pytest.raises(ConfigError, match=r"device: device 'cuda' asked for, but CUDA is not"):
        Trainer(cfg, tmp_path / "o", progress=False)
    with pytest.raises(ConfigError, match=r"device: unknown value 'tpu'"):
        config_from_dict({**base(toy), "device": "tpu"})
