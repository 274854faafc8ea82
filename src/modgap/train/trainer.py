"""The training loop: AdamW, warm-up + cosine/step schedule, clipping, AMP on CUDA, checkpoints
that resume mid-epoch, best-model selection on validation rSum.

Reproducibility. The model is initialised from ``seed``; the caption order of epoch ``e`` is a
function of ``(seed, e)`` only (:func:`~modgap.train.data.epoch_order`) and the learning rate a
function of the global step, so the state needed to resume exactly is: weights, AdamW moments,
``(epoch, step in epoch)``, the torch RNG states and the GradScaler state. A checkpoint stores
the tensors in ``checkpoints/state-<step>.safetensors`` (RNG states as uint8 tensors) and the
rest in ``checkpoints/last.json``, which is written last and names the tensor file: it is the
commit point, so a run killed while writing resumes from the previous checkpoint. Nothing is
pickled. On CPU a resumed run reproduces the uninterrupted one bit for bit.

Files in the output folder: ``config.yaml`` (resolved), ``vocab.json`` (word-id text only),
``checkpoints/``, ``best.safetensors`` (weights with the best validation rSum, its epoch and
metrics in the file's metadata; see :mod:`modgap.train.checkpoint`),
``results.json`` (history, test metrics of the selected model, provenance).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import yaml

from .._progress import progress as progress_bar
from ..compute import limit_threads, resolve_device
from ..embeddings import FeatureSet
from ..errors import InputError, ModgapError, notice
from ..files import atomic_path, output_lock, write_json
from .checkpoint import load_best, read_checkpoint, save_best, write_checkpoint
from .config import ConfigError, TrainConfig, load_config
from .data import build_data, epoch_order, eval_folds, image_batch, text_batch
from .evaluate import evaluate_model
from .setup import build_loss, build_model, check_model_size, lr_factor, run_provenance

__all__ = ["Trainer", "build_data", "build_loss", "build_model", "lr_factor", "train"]


# -- the trainer ------------------------------------------------------------------------------


class Trainer:
    """Train a matching model as configured; see the module docstring.

    Parameters
    ----------
    cfg : TrainConfig
    out_dir : path, optional
        Output folder (default ``cfg.out``).
    resume : bool
        Continue from ``out_dir/checkpoints/last.json`` (start fresh, with a notice, if absent).
    progress : bool
        Show rich progress bars with running losses.
    on_step : callable(trainer, global_step), optional
        Called after every optimiser step (and after a checkpoint due at that step).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: str | os.PathLike | None = None,
        resume: bool = False,
        progress: bool = True,
        on_step: Callable | None = None,
    ):
        self.cfg = cfg
        self.out = Path(out_dir if out_dir is not None else cfg.out)
        self.ckpt_dir = self.out / "checkpoints"
        self.resume = resume
        self.progress = progress
        self.on_step = on_step
        last = self.ckpt_dir / "last.json"
        if last.exists() and not resume:
            raise ModgapError(
                f"{self.out} already holds a run ({last}); pass --resume to continue it or "
                "--out for a new folder"
            )
        if cfg.deterministic:
            # cuBLAS needs a fixed workspace for deterministic results; set before CUDA starts
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        try:
            self.device = resolve_device(cfg.device)
        except ModgapError as e:
            raise ConfigError(f"device: {e}") from None
        # all inputs are read and checked before anything is trained
        self.train_data, self.val_data, self.test_data = build_data(cfg)
        check_model_size(cfg, self.train_data, self.device)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg, self.train_data).to(self.device)
        self.loss = build_loss(cfg).to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        params += [p for p in self.loss.parameters() if p.requires_grad]
        self.params = params
        self.optimizer = torch.optim.AdamW(
            params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
        )
        self.amp_dtype = None
        self.scaler = None
        if cfg.optim.amp and self.device.type == "cuda":
            if torch.cuda.is_bf16_supported():
                self.amp_dtype = torch.bfloat16
            else:
                self.amp_dtype = torch.float16
                self.scaler = torch.amp.GradScaler("cuda")
        n = self.train_data.n_texts
        b = cfg.optim.batch_size
        # a last batch of one pair has no negatives: it is dropped
        self.steps_per_epoch = n // b + (1 if n % b >= 2 else 0)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.best = {"rsum": -math.inf, "epoch": None}
        self.history: list[dict] = []
        self.running: dict[str, float] = {}  # smoothed losses, carried across epochs
        if resume:
            if last.exists():
                self._load_checkpoint(last)
            else:
                notice(f"no checkpoint in {self.ckpt_dir}; starting a new run")

    # -- state ----------------------------------------------------------------------------
    def _config_dump(self) -> dict:
        return self.cfg.to_dict()

    def save_checkpoint(self) -> Path:
        """Write the tensor file, then ``last.json`` (the commit point), then prune old files."""
        return write_checkpoint(
            self.ckpt_dir,
            model=self.model,
            loss=self.loss,
            optimizer=self.optimizer,
            device=self.device,
            counters={
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "global_step": self.global_step,
                "steps_per_epoch": self.steps_per_epoch,
            },
            best=self.best if math.isfinite(self.best["rsum"]) else None,
            history=self.history,
            scaler=self.scaler,
            config=self._config_dump(),
            running=self.running,
        )

    def _load_checkpoint(self, last: Path) -> None:
        state = read_checkpoint(
            last,
            model=self.model,
            loss=self.loss,
            optimizer=self.optimizer,
            steps_per_epoch=self.steps_per_epoch,
            epochs=self.cfg.optim.epochs,
        )
        old = state.get("config", {})
        new = self._config_dump()
        for section in ("data", "model", "loss"):
            if old.get(section) != new.get(section):
                raise ModgapError(
                    f"{last}: the '{section}' section of the config changed since this run was "
                    "started; resume with the same config or use a new --out"
                )
        if old.get("seed") != new.get("seed"):
            raise ModgapError(f"{last}: seed changed since this run was started")
        tensors = state.tensors
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        self.loss.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("loss.")})
        try:
            self.optimizer.load_state_dict(state.optimizer_state)
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(tensors["rng.torch"])
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise InputError(f"the checkpoint does not fit this run ({e})", str(last)) from None
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.epoch = state["epoch"]
        self.step_in_epoch = state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.history = list(state["history"])
        self.running = {str(k): float(v) for k, v in state["running"].items()}
        if state.get("best"):
            self.best = state["best"]

    def _save_best(self, metrics: dict, epoch: int) -> None:
        save_best(self.out / "best.safetensors", self.model, epoch, metrics)

    # -- one step ---------------------------------------------------------------------------
    def train_step(self, index: np.ndarray) -> dict[str, float]:
        data, dev = self.train_data, self.device
        img_idx = data.text_to_image[index]
        images = image_batch(data, img_idx, dev)
        texts, lengths = text_batch(data, index, dev)
        ids = torch.from_numpy(img_idx).to(dev)
        for g in self.optimizer.param_groups:
            g["lr"] = self.cfg.optim.lr * lr_factor(
                self.global_step, self.cfg, self.steps_per_epoch
            )
        self.model.train()
        with torch.autocast(
            device_type=dev.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None
        ):
            v = self.model.encode_images(images)
            t = self.model.encode_texts(texts, lengths)
        total, terms = self.loss(v.float(), t.float(), ids, self.epoch)
        if not math.isfinite(terms["total"]):
            raise ModgapError(
                f"loss became {terms['total']} at step {self.global_step}; lower optim.lr or "
                "the loss weights"
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            total.backward()
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return terms

    @contextmanager
    def _torch_settings(self) -> Iterator[None]:
        """``threads`` (torch and BLAS) and ``deterministic`` of the config while training or
        scoring, and the caller's settings back afterwards (they are process-wide)."""
        cfg = self.cfg
        saved = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
        )
        try:
            with limit_threads(cfg.threads or None):  # torch and BLAS (the evaluation's numpy)
                if cfg.deterministic:
                    torch.use_deterministic_algorithms(True, warn_only=True)
                    if self.device.type == "cuda":
                        torch.backends.cudnn.deterministic = True
                        torch.backends.cudnn.benchmark = False
                yield
        finally:
            torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2:]

    def score(self, data: FeatureSet) -> dict:
        """Evaluate the current model on ``data`` (the config's protocol)."""
        with self._torch_settings():
            return self._score(data)

    def _score(self, data: FeatureSet) -> dict:
        e = self.cfg.eval
        return evaluate_model(
            self.model,
            data,
            relevance=e.relevance,
            folds=eval_folds(self.cfg),
            measures=e.measures,
            zero_shot=e.zero_shot,
            device=self.device,
            batch_size=e.batch_size,
        )

    # -- the loop ---------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to ``optim.epochs``, evaluate, write ``results.json``; return the results.

        On a terminal a progress bar per epoch shows the running losses; in a log file or a
        pipe every epoch ends with one plain line holding all of them (never cut to a width).
        """
        with output_lock(self.out, "--out"), self._torch_settings():
            return self._fit()

    def _fit(self) -> dict:
        import sys

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.out / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(self._config_dump(), sort_keys=False), encoding="utf-8")
        vocab = self.train_data.metadata.get("vocab")
        if vocab is not None:
            with atomic_path(self.out / "vocab.json", ".json") as tmp:
                tmp.write_text(vocab.to_json(), encoding="utf-8")
        start = time.perf_counter()
        b = cfg.optim.batch_size
        n = self.train_data.n_texts
        every = cfg.checkpoint.every_steps
        running = self.running
        if self.epoch >= cfg.optim.epochs:
            notice(
                f"{self.out} already finished its {cfg.optim.epochs} epochs; writing its results "
                "again"
            )
        while self.epoch < cfg.optim.epochs:
            order = epoch_order(n, cfg.seed, self.epoch)
            title = f"epoch {self.epoch + 1}/{cfg.optim.epochs}"
            with progress_bar(
                title, total=self.steps_per_epoch, enabled=self.progress, transient=False
            ) as bar:
                bar.update(completed=self.step_in_epoch)
                while self.step_in_epoch < self.steps_per_epoch:
                    index = order[self.step_in_epoch * b : (self.step_in_epoch + 1) * b]
                    terms = self.train_step(index)
                    for k, v in terms.items():
                        running[k] = v if k not in running else 0.9 * running[k] + 0.1 * v
                    self.step_in_epoch += 1
                    self.global_step += 1
                    if every and self.global_step % every == 0:
                        self.save_checkpoint()
                    losses = " ".join(f"{k} {v:.4g}" for k, v in running.items())
                    bar.advance()
                    bar.describe(f"{title} {losses}")
                    if self.on_step is not None:
                        self.on_step(self, self.global_step)
            record = {"epoch": self.epoch + 1, "step": self.global_step, **running}
            line = f"{title}: step {self.global_step}, " + ", ".join(
                f"{k} {v:.4g}" for k, v in running.items()
            )
            if self.val_data is not None and (self.epoch + 1) % cfg.eval.every_epochs == 0:
                metrics = self.score(self.val_data)
                record.update({f"val_{k}": v for k, v in metrics.items()})
                if metrics["rsum"] > self.best["rsum"]:
                    self.best = {"rsum": metrics["rsum"], "epoch": self.epoch + 1}
                    if cfg.checkpoint.keep_best:
                        self._save_best(metrics, self.epoch + 1)
                line += (
                    f"; val rSum {metrics['rsum']:.2f} (best {self.best['rsum']:.2f} @ epoch "
                    f"{self.best['epoch']})"
                )
            if self.progress:
                print(line, file=sys.stderr, flush=True)
            self.history.append(record)
            self.epoch += 1
            self.step_in_epoch = 0
            self.save_checkpoint()
        return self._finish(time.perf_counter() - start)

    def _finish(self, elapsed: float) -> dict:
        cfg = self.cfg
        selected = "last"
        best_path = self.out / "best.safetensors"
        if cfg.checkpoint.keep_best and self.best.get("epoch") and best_path.exists():
            load_best(best_path, self.model)
            selected = f"best (epoch {self.best['epoch']})"
        else:
            save_best(best_path, self.model, None, {"selected": "last"})
        results = {
            "name": cfg.name,
            "selected_model": selected,
            "best_val_rsum": self.best["rsum"] if math.isfinite(self.best["rsum"]) else None,
            "best_epoch": self.best.get("epoch"),
            "history": self.history,
            "val": self.score(self.val_data) if self.val_data is not None else None,
            "test": self.score(self.test_data) if self.test_data is not None else None,
            "train_seconds_this_session": elapsed,
            "data": {
                "train_images": self.train_data.n_images,
                "train_texts": self.train_data.n_texts,
                "val_images": self.val_data.n_images if self.val_data is not None else 0,
                "test_images": self.test_data.n_images if self.test_data is not None else 0,
                "source": self.train_data.source,
            },
            "provenance": run_provenance(cfg, self.device),
            "config": self._config_dump(),
        }
        write_json(self.out / "results.json", results)
        return results


def train(
    config: TrainConfig | str | os.PathLike,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable | None = None,
) -> dict:
    """Train from a config (object or YAML path); returns the results dict."""
    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    return Trainer(cfg, out, resume=resume, progress=progress, on_step=on_step).fit()
