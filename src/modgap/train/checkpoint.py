"""Training checkpoints and the best model: written whole, read back only after every field has
been checked.

A checkpoint is ``checkpoints/state-<step>.safetensors`` (weights, AdamW moments, RNG states as
uint8 tensors) plus ``checkpoints/last.json`` (counters, history, optimiser hyper-parameters,
the config), which is written last and names the tensor file: it is the commit point, so a run
killed while writing resumes from the previous checkpoint. The best model is one file,
``best.safetensors``, whose metadata holds its epoch and validation metrics, so weights and
metrics cannot come from different epochs. Nothing is pickled.

A damaged or edited checkpoint (truncated or garbage tensors, missing or mistyped fields, a
tensor path that leaves the folder, wrong tensor shapes, impossible step counters) is a one-line
:class:`~modgap.errors.InputError` naming the file, never a traceback and never a silent skip.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import InputError
from ..files import atomic_path, write_json
from ..provenance import jsonable, restored

__all__ = [
    "CheckpointState",
    "load_best",
    "read_checkpoint",
    "save_best",
    "save_tensors",
    "write_checkpoint",
]

_STATE_NAME = re.compile(r"^state-\d{9}\.safetensors$")


def save_tensors(tensors: dict, path: Path, metadata: dict[str, str] | None = None) -> None:
    flat = {k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}
    with atomic_path(path, ".safetensors") as tmp:
        save_file(flat, str(tmp), metadata=metadata)


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise InputError("missing tensor file of the checkpoint", str(path))
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception as e:  # safetensors raises its own types for truncated or garbage files
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise InputError(
            f"cannot read it, the file is truncated or corrupt ({first}); delete the run's "
            "checkpoints/ folder to start over",
            str(path),
        ) from None


class CheckpointState(dict):
    """The validated content of ``last.json`` (a dict) plus the checkpoint's tensors."""

    tensors: dict[str, torch.Tensor]


def write_checkpoint(
    ckpt_dir: Path,
    *,
    model: torch.nn.Module,
    loss: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    counters: dict[str, int],
    best: dict | None,
    history: list,
    scaler: Any,
    config: dict,
    running: dict[str, float] | None = None,
) -> Path:
    """Write the tensor file, then ``last.json`` (the commit point), then prune old files."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"loss.{k}": v for k, v in loss.state_dict().items()})
    opt = optimizer.state_dict()
    extra_state: dict = {}
    for idx, st in opt["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v
            else:
                extra_state[f"{idx}.{k}"] = v
    tensors["rng.torch"] = torch.get_rng_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    name = f"state-{counters['global_step']:09d}.safetensors"
    save_tensors(tensors, ckpt_dir / name)
    meta = {
        "tensors": name,
        **counters,
        "best": best,
        "history": history,
        "param_groups": opt["param_groups"],
        "optim_extra": extra_state,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "config": config,
        "running": dict(running or {}),
    }
    write_json(ckpt_dir / "last.json", meta)
    for old in ckpt_dir.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return ckpt_dir / name


def _int(meta: dict, key: str, src: str, low: int = 0) -> int:
    v = meta.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise InputError(f"checkpoint field '{key}' must be an integer >= {low}, got {v!r}", src)
    return v


def read_checkpoint(
    last: Path,
    *,
    model: torch.nn.Module,
    loss: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    epochs: int,
) -> CheckpointState:
    """Read and check ``last.json`` and its tensor file against the model and optimiser that
    will receive them; returns the metadata, with the tensors in ``.tensors``. Nothing is loaded
    into the model here."""
    src = str(last)
    try:
        meta = json.loads(last.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read the checkpoint ({e})", src) from None
    except ValueError:
        raise InputError("the checkpoint is not valid JSON (truncated or edited)", src) from None
    if not isinstance(meta, dict):
        raise InputError("the checkpoint must be a JSON object", src)
    # validation metrics (best, history, running) may be inf or NaN, written as strings
    meta = restored(meta, keep_text=("config",))
    name = meta.get("tensors")
    if not isinstance(name, str) or not _STATE_NAME.match(name):
        raise InputError(
            f"checkpoint field 'tensors' must name a state-<step>.safetensors file in the "
            f"checkpoint folder, got {name!r}",
            src,
        )
    epoch = _int(meta, "epoch", src)
    step_in_epoch = _int(meta, "step_in_epoch", src)
    global_step = _int(meta, "global_step", src)
    spe = _int(meta, "steps_per_epoch", src, low=1)
    if spe != steps_per_epoch:
        raise InputError(
            f"the checkpoint has {spe} steps per epoch but this config and data give "
            f"{steps_per_epoch} (batch size or data changed); resume with the same config",
            src,
        )
    # step == steps per epoch: the epoch's last step was taken (a checkpoint due at that step)
    # but not its end (evaluation, history): resuming finishes that epoch first
    last_step = step_in_epoch == spe and epoch < epochs
    if (
        (step_in_epoch >= spe and not last_step)
        or global_step != epoch * spe + step_in_epoch
        or epoch > epochs
    ):
        raise InputError(
            f"impossible step counters in the checkpoint (epoch {epoch}, step {step_in_epoch} "
            f"of {spe}, global step {global_step}, {epochs} epochs configured)",
            src,
        )
    if name != f"state-{global_step:09d}.safetensors":
        raise InputError(f"checkpoint names {name} but its global step is {global_step}", src)
    for key, kind in (
        ("history", list),
        ("param_groups", list),
        ("optim_extra", dict),
        ("config", dict),
    ):
        if not isinstance(meta.get(key), kind):
            raise InputError(f"checkpoint field '{key}' must be a {kind.__name__}", src)
    best = meta.get("best")
    if best is not None and (
        not isinstance(best, dict)
        or not isinstance(best.get("rsum"), int | float)
        or not math.isfinite(best["rsum"])
    ):
        raise InputError("checkpoint field 'best' must be null or {rsum, epoch}", src)
    if meta.get("scaler") is not None and not isinstance(meta["scaler"], dict):
        raise InputError("checkpoint field 'scaler' must be null or an object", src)
    running = meta.setdefault("running", {})  # absent in checkpoints of earlier versions
    if not isinstance(running, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        for v in running.values()
    ):
        raise InputError("checkpoint field 'running' must map loss names to numbers", src)
    tensors, _ = _read_tensors(last.parent / name)
    _check_tensors(tensors, "model.", model.state_dict(), last.parent / name)
    _check_tensors(tensors, "loss.", loss.state_dict(), last.parent / name)
    if "rng.torch" not in tensors or tensors["rng.torch"].dtype != torch.uint8:
        raise InputError("the checkpoint has no valid torch RNG state", str(last.parent / name))
    out = CheckpointState(meta)
    out.tensors = tensors
    out.optimizer_state = _optimizer_state(tensors, meta, optimizer, src)
    return out


def _check_tensors(tensors: dict, prefix: str, expected: dict, path: Path) -> None:
    got = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if set(got) != set(expected):
        missing = sorted(set(expected) - set(got))[:3]
        extra = sorted(set(got) - set(expected))[:3]
        raise InputError(
            f"the checkpoint's {prefix.rstrip('.')} tensors do not fit this model (missing: "
            f"{missing or 'none'}, unexpected: {extra or 'none'}); resume with the same config",
            str(path),
        )
    for k, v in expected.items():
        if tuple(got[k].shape) != tuple(v.shape) or got[k].dtype != v.dtype:
            raise InputError(
                f"checkpoint tensor '{prefix}{k}' is {tuple(got[k].shape)} {got[k].dtype}, the "
                f"model needs {tuple(v.shape)} {v.dtype}",
                str(path),
            )


def _optimizer_state(tensors: dict, meta: dict, optimizer, src: str) -> dict:
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            parts = k.split(".", 2)
            if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) >= len(params):
                raise InputError(f"checkpoint tensor '{k}' names no optimiser parameter", src)
            state.setdefault(int(parts[1]), {})[parts[2]] = v
    for k, v in meta["optim_extra"].items():
        idx, _, key = str(k).partition(".")
        if not idx.isdigit() or int(idx) >= len(params) or not key:
            raise InputError(f"checkpoint optimiser entry '{k}' names no parameter", src)
        if not isinstance(v, int | float) or isinstance(v, bool):
            raise InputError(f"checkpoint optimiser entry '{k}' must be a number", src)
        state.setdefault(int(idx), {})[key] = v
    for idx, st in state.items():
        p = params[idx]
        for key in ("exp_avg", "exp_avg_sq"):
            if key in st and tuple(st[key].shape) != tuple(p.shape):
                raise InputError(
                    f"checkpoint optimiser state {idx}.{key} has shape {tuple(st[key].shape)}, "
                    f"the parameter has {tuple(p.shape)}",
                    src,
                )
    groups = meta["param_groups"]
    if len(groups) != len(optimizer.param_groups) or any(not isinstance(g, dict) for g in groups):
        raise InputError("checkpoint 'param_groups' do not fit this optimiser", src)
    for g, mine in zip(groups, optimizer.param_groups, strict=True):
        ids = g.get("params")
        if not isinstance(ids, list) or len(ids) != len(mine["params"]):
            raise InputError("checkpoint 'param_groups' do not fit this optimiser", src)
    return {"state": state, "param_groups": groups}


def save_best(path: Path, model: torch.nn.Module, epoch: int | None, metrics: dict) -> None:
    """One file: the weights, with the epoch and validation metrics in its metadata."""
    info = jsonable({"epoch": epoch, "metrics": metrics})  # strict JSON, as every modgap file
    meta = {"modgap_best": json.dumps(info, allow_nan=False)}
    save_tensors(model.state_dict(), path, metadata=meta)


def load_best(path: Path, model: torch.nn.Module) -> dict:
    """Load ``best.safetensors`` into ``model`` (checked); returns ``{"epoch", "metrics"}``."""
    tensors, meta = _read_tensors(path)
    _check_tensors(
        {f"model.{k}": v for k, v in tensors.items()}, "model.", model.state_dict(), path
    )
    try:
        info = json.loads(meta.get("modgap_best", "{}"))
    except ValueError:
        raise InputError("the best model's metadata is not valid JSON", str(path)) from None
    model.load_state_dict(tensors)
    return restored(info) if isinstance(info, dict) else {}
