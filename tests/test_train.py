"""End-to-end training: the CLI on a tiny config, checkpoints, exact resume after an interrupt and
after SIGKILL mid-epoch, best-model selection, results on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from modgap.cli import main
from modgap.errors import ModgapError
from modgap.train import config_from_dict, write_toy_precomp
from modgap.train.trainer import Trainer, build_model, lr_factor

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy_precomp(
        tmp_path_factory.mktemp("toy") / "precomp",
        {"train": 48, "dev": 12, "test": 12},
        regions=4,
        dim=16,
        seed=0,
    )


def tiny(toy: Path, **over) -> dict:
    cfg = {
        "name": "tiny",
        "seed": 3,
        "threads": 1,
        "data": {"format": "precomp", "path": str(toy)},
        "model": {"joint_dim": 16, "word_dim": 8, "image_head": "mlp"},
        "loss": {
            "matching": "infonce",  # learnable temperature: loss state must resume too
            "alpha": 0.05,
            "beta": 1.0,
            "gamma": 1.0,
            "mask_rule": "topk",
            "mask_k": 3,
        },
        "optim": {"epochs": 3, "batch_size": 32, "lr": 3e-3, "warmup_steps": 3},
        "eval": {"measures": ["centroid_gap"]},
        "checkpoint": {"every_steps": 3},
    }
    for key, value in over.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    return cfg


def final_state(out: Path) -> dict:
    meta = json.loads((out / "checkpoints/last.json").read_text())
    return load_file(str(out / "checkpoints" / meta["tensors"]))


def assert_same_state(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        if k.startswith("rng."):
            continue
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(toy, tmp_path_factory):
    """One uninterrupted run (8 steps per epoch, 3 epochs)."""
    out = tmp_path_factory.mktemp("ref")
    res = Trainer(config_from_dict(tiny(toy)), out, progress=False).fit()
    return out, res


def test_run_writes_results_checkpoints_and_best(reference):
    out, res = reference
    for name in ("config.yaml", "vocab.json", "best.safetensors", "results.json"):
        assert (out / name).exists(), name
    assert len(list((out / "checkpoints").glob("state-*.safetensors"))) == 1  # old ones pruned
    meta = json.loads((out / "checkpoints/last.json").read_text())
    assert meta["epoch"] == 3 and meta["step_in_epoch"] == 0 and meta["global_step"] == 24
    saved = json.loads((out / "results.json").read_text())
    assert saved["best_epoch"] == max(
        range(1, 4), key=lambda e: (saved["history"][e - 1]["val_rsum"], -e)
    )
    assert saved["test"]["rsum"] == pytest.approx(res["test"]["rsum"])
    assert {"match", "dim", "inter", "intra", "total"} <= set(saved["history"][0])
    assert "gap_centroid_gap" in saved["test"]
    assert saved["provenance"]["seed"] == 3


def test_training_leaves_the_callers_torch_settings_alone(toy, tmp_path):
    """threads and deterministic algorithms are process-wide: set while training, put back."""
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    cfg = config_from_dict(tiny(toy, threads=1, deterministic=True, optim={"epochs": 1}))
    tr = Trainer(cfg, tmp_path, progress=False)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    tr.fit()
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    tr.score(tr.val_data or tr.train_data)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before


def test_training_beats_the_untrained_model(toy, reference):
    _, res = reference
    cfg = config_from_dict(tiny(toy))
    tr = Trainer(cfg, Path(res["config"]["out"]) / "never-written", progress=False)
    untrained = tr.score(tr.test_data)["rsum"]
    assert res["test"]["rsum"] > untrained + 20


def test_resume_after_interrupt_mid_epoch_is_exact(toy, reference, tmp_path):
    ref_out, ref_res = reference

    def stop(trainer, step):
        if step == 13:  # epoch 2, step 5 of 8; last checkpoint at step 12
            raise KeyboardInterrupt

    cfg = config_from_dict(tiny(toy))
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, tmp_path, progress=False, on_step=stop).fit()
    meta = json.loads((tmp_path / "checkpoints/last.json").read_text())
    assert (meta["epoch"], meta["step_in_epoch"], meta["global_step"]) == (1, 4, 12)
    res = Trainer(config_from_dict(tiny(toy)), tmp_path, resume=True, progress=False).fit()
    assert_same_state(final_state(tmp_path), final_state(ref_out))
    assert res["test"] == ref_res["test"]
    assert res["best_epoch"] == ref_res["best_epoch"]


def test_resume_after_sigkill_mid_epoch_is_exact(toy, reference, tmp_path):
    ref_out, _ = reference
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny(toy)))
    out = tmp_path / "run"
    script = textwrap.dedent(
        f"""
        import os, signal
        from modgap.train import load_config
        from modgap.train.trainer import Trainer

        def kill(trainer, step):
            if step == 11:  # epoch 2, step 3 of 8; last checkpoint at step 9
                os.kill(os.getpid(), signal.SIGKILL)

        Trainer(load_config({str(cfg_path)!r}), {str(out)!r}, progress=False, on_step=kill).fit()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    meta = json.loads((out / "checkpoints/last.json").read_text())
    assert (meta["epoch"], meta["step_in_epoch"]) == (1, 1)
    assert main(["train", str(cfg_path), "--resume", "--out", str(out), "--no-progress"]) == 0
    assert_same_state(final_state(out), final_state(ref_out))


def test_existing_run_needs_resume(toy, reference, capsys):
    out, _ = reference
    cfg = config_from_dict(tiny(toy))
    with pytest.raises(ModgapError, match=r"already holds a run.*--resume"):
        Trainer(cfg, out, progress=False)


def test_resume_refuses_a_changed_config(toy, reference, tmp_path):
    out, _ = reference
    import shutil

    shutil.copytree(out, tmp_path / "copy")
    cfg = config_from_dict(tiny(toy, loss={"alpha": 0.5}))
    with pytest.raises(ModgapError, match="'loss' section of the config changed"):
        Trainer(cfg, tmp_path / "copy", resume=True, progress=False)


def test_cli_trains_tiny_config(toy, tmp_path, capsys):
    cfg = tiny(toy, optim={"epochs": 1}, checkpoint={"every_steps": 0})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "rsum" in out and "results.json" in out
    res = json.loads((tmp_path / "o/results.json").read_text())
    assert res["data"]["train_images"] == 48 and res["data"]["test_images"] == 12


def test_heads_only_identity_init_starts_at_the_frozen_space(coco500_path, tmp_path):
    cfg = config_from_dict(
        {
            "threads": 1,
            "data": {"format": "embeddings", "path": str(coco500_path), "val": 50, "test": 100},
            "model": {"joint_dim": 512, "identity_init": True, "image_head": "mlp"},
            "optim": {"epochs": 1, "batch_size": 64},
            "eval": {"measures": []},
        }
    )
    tr = Trainer(cfg, tmp_path, progress=False)
    from modgap.tasks.retrieval import retrieval_metrics

    d = tr.test_data
    expected = retrieval_metrics(d.images, d.texts, d.text_to_image)
    assert tr.score(d)["rsum"] == pytest.approx(expected["rsum"])
    assert (tr.train_data.n_images, tr.val_data.n_images, d.n_images) == (350, 50, 100)


def test_lr_schedule():
    cfg = config_from_dict(
        {"data": {"path": "x"}, "optim": {"epochs": 2, "warmup_steps": 4, "min_lr_ratio": 0.1}}
    )
    f = [lr_factor(s, cfg, 10) for s in range(20)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == pytest.approx(1.0) and f[-1] > 0.1 and np.all(np.diff(f[4:]) < 0)
    assert lr_factor(20, cfg, 10) == pytest.approx(0.1)
    step = config_from_dict(
        {"data": {"path": "x"}, "optim": {"schedule": "step", "step_epochs": 2, "step_gamma": 0.5}}
    )
    assert [lr_factor(s * 10, step, 10) for s in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]


def test_build_model_is_seeded(toy):
    cfg = config_from_dict(tiny(toy))
    from modgap.io.precomp import load_precomp

    data = load_precomp(toy, "train")
    torch.manual_seed(0)
    a = build_model(cfg, data).state_dict()
    torch.manual_seed(0)
    b = build_model(cfg, data).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_features_format_class_relevance_and_zero_shot(tmp_path):
    """Tower features of unequal widths (the pocket heads' setting), class-level retrieval and
    zero-shot through the text head."""
    from modgap.io.features import write_features

    rng = np.random.default_rng(0)
    c, n = 6, 120
    labels = np.arange(n) % c
    pi, pt = rng.standard_normal((c, 10)), rng.standard_normal((c, 6))
    path = tmp_path / "f.npz"
    write_features(
        path,
        image_features=pi[labels] + 0.3 * rng.standard_normal((n, 10)),
        text_features=pt[labels] + 0.3 * rng.standard_normal((n, 6)),
        labels=labels,
        class_names=np.array([f"c{i}" for i in range(c)]),
        class_text_features=pt[:, None, :] + 0.1 * rng.standard_normal((c, 2, 6)),
    )
    cfg = config_from_dict(
        {
            "threads": 1,
            "data": {"format": "features", "path": str(path), "val": 24, "test": 36},
            "model": {"joint_dim": 8},
            "loss": {"matching": "infonce", "alpha": 0.01, "beta": 1.0, "gamma": 1.0},
            "optim": {"epochs": 20, "batch_size": 30, "lr": 1e-2},
            "eval": {"relevance": "class", "measures": ["centroid_gap"]},
        }
    )
    res = Trainer(cfg, tmp_path / "o", progress=False).fit()
    test = res["test"]
    assert {"rsum", "class_map_t2i", "class_map_i2t", "zeroshot_acc1", "gap_centroid_gap"} <= set(
        test
    )
    # six well separated classes: far above chance (1/6) after training
    assert test["zeroshot_acc1"] > 0.5 and test["class_map_t2i"] > 0.5


def test_every_checkpoint_resumes_to_the_same_run(toy, reference, tmp_path):
    """The process ends right after each checkpoint it writes — mid-epoch, at an epoch's last
    step (step 8 of 8, before the epoch's evaluation), after an epoch's end and after the last
    epoch — and --resume reaches the same weights, history and test scores."""
    ref_out, ref_res = reference
    cfg = tiny(toy, checkpoint={"every_steps": 4})  # steps 8, 16, 24 end an epoch
    written: list[tuple[int, int]] = []

    class Ended(Exception):
        pass

    def ending_after(k: int):
        class Ending(Trainer):
            def save_checkpoint(self):
                path = super().save_checkpoint()
                written.append((self.epoch, self.step_in_epoch))
                if len(written) == k:
                    raise Ended
                return path

        return Ending

    k = 0
    while True:
        k += 1
        written.clear()
        out = tmp_path / f"end{k}"
        try:
            ending_after(k)(config_from_dict(cfg), out, progress=False).fit()
            break  # k is past the last checkpoint
        except Ended:
            pass
        res = Trainer(config_from_dict(cfg), out, resume=True, progress=False).fit()
        assert_same_state(final_state(out), final_state(ref_out))
        assert res["test"] == ref_res["test"] and res["best_epoch"] == ref_res["best_epoch"]
        assert res["history"] == ref_res["history"], written[-1]
    assert (0, 8) in written and (1, 0) in written and written[-1] == (3, 0)
    assert k == len(written) + 1


def test_resuming_a_finished_run_rewrites_the_same_results(toy, reference, tmp_path, capsys):
    ref_out, ref_res = reference
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny(toy)))
    out = tmp_path / "run"
    assert main(["train", str(cfg_path), "--out", str(out), "-q"]) == 0
    before = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    assert main(["train", str(cfg_path), "--resume", "--out", str(out), "--no-progress"]) == 0
    assert "already finished its 3 epochs" in capsys.readouterr().err
    after = json.loads((out / "results.json").read_text())
    for key in ("test", "val", "history", "best_epoch", "selected_model"):
        assert after[key] == before[key] == ref_res[key], key
    assert_same_state(final_state(out), final_state(ref_out))
