"""Inference with a trained run: the device, crop-averaged probabilities, a loaded run, predict.

`fit` scores its validation epochs with the same `crop_probabilities` that a loaded run
(`Run.probabilities`) uses, so a run is judged during training exactly as it is used after.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from melset.augment import covering_crops
from melset.errors import RunError, UsageError
from melset.model import Architecture, MelCNN, build
from melset.recipe import Recipe
from melset.runs import check_sha256, read_config, read_metrics, require, require_complete, unreadable
from melset.system import silenced_stderr
from melset.vocab import OK, RUN_CONFIG, RUN_WEIGHTS


def pick_device(name: str) -> torch.device:
    """The torch device for "auto", "cpu" or "cuda". Raises UsageError for cuda without CUDA."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"--device must be auto, cpu or cuda, not {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked, but PyTorch sees no CUDA device here; use --device cpu or auto")
    return torch.device(name)


def crop_probabilities(model: nn.Module, x: torch.Tensor, crop: int, multi_label: bool = False) -> torch.Tensor:
    """Probabilities averaged over the `covering_crops` of each item (the whole input when crop is 0):
    softmax over genres, or a sigmoid per genre for a multi-label model."""
    crops = covering_crops(x, crop)
    link = torch.sigmoid if multi_label else (lambda logits: torch.softmax(logits, dim=1))
    return torch.stack([link(model(c)) for c in crops]).mean(dim=0)


def all_finite(obj) -> bool:
    """Whether every floating-point tensor in `obj` (tensors in dicts and lists, nested) is finite."""
    if isinstance(obj, torch.Tensor):
        return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
    if isinstance(obj, dict):
        return all(all_finite(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return all(all_finite(v) for v in obj)
    return True


@dataclass
class Run:
    """A trained run loaded for inference."""

    root: str
    config: dict
    model: MelCNN
    device: torch.device

    @property
    def classes(self) -> list[str]:
        return self.config["classes"]

    @property
    def recipe(self) -> Recipe:
        return Recipe.from_dict(self.config["recipe"])

    @property
    def multi_label(self) -> bool:
        return bool(self.config.get("multi_label", False))

    @property
    def crop(self) -> int:
        """Frames per crop the model was trained on (0: whole windows)."""
        return int(self.config.get("hyperparameters", {}).get("crop", 0))

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """x: (batch, n_mels, n_frames) matrices -> (batch, n_classes) softmax (a sigmoid per genre
        when multi-label), averaged over the covering crops the model was trained on."""
        with torch.no_grad():
            t = torch.from_numpy(np.array(x, dtype=np.float32)).unsqueeze(1).to(self.device)
            return crop_probabilities(self.model, t, self.crop, self.multi_label).cpu().numpy()


def load_run(run_dir: str, device: str = "auto") -> Run:
    """A finished run folder written by `train`, ready for inference.

    Raises RunError naming what is wrong: a run whose training did not finish (with the
    command that resumes it), a damaged config.json or metrics.json, a model.pt that does not load.
    """
    model_path = os.path.join(run_dir, RUN_WEIGHTS)
    require_complete(run_dir)
    config = read_config(run_dir)
    metrics = read_metrics(run_dir)  # written last: the run finished, and its record is whole
    require(run_dir, (RUN_WEIGHTS,))
    check_sha256(run_dir, metrics)  # config.json and model.pt are the files train wrote
    try:
        model = build(Architecture.from_dict(config["model"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise unreadable(os.path.join(run_dir, RUN_CONFIG), exc) from None
    dev = pick_device(device)
    try:
        state = torch.load(model_path, map_location=dev, weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a damaged file
        raise RunError(f"{model_path} cannot be loaded ({type(exc).__name__}); train the run again") from exc
    if not all_finite(state):
        raise RunError(f"{model_path} holds weights that are not finite numbers (NaN or infinity); train the run again")
    model.to(dev).eval()
    return Run(os.path.abspath(run_dir), config, model, dev)


def predict(
    run_dir: str,
    files: list[str],
    whole_track: bool = False,
    top: int = 3,
    device: str = "auto",
    threshold: float = 0.5,
) -> list[dict]:
    """Top genres for audio files, computed with exactly the recipe the run's store was made with.

    Parameters
    ----------
    run_dir : path
        A run folder written by `train`.
    files : list of path
        Audio files (anything `melset extract` reads).
    whole_track : bool
        Average the probabilities over consecutive windows of the whole file, not the first.
    top : int
        How many genres to list per file.
    device : {"auto", "cpu", "cuda"}
    threshold : float
        Multi-label runs: the genres whose sigmoid output reaches it are listed in "genres".

    Returns
    -------
    list of dict
        Per file: ``{"file", "windows", "top": [{"genre", "probability"}, ...]}`` (multi-label
        runs add ``"genres"``: those at or above the threshold, highest first), or
        ``{"file", "error"}`` when the file cannot be used.

    Raises
    ------
    RunError
        The run folder cannot be used.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold must be between 0 and 1, not {threshold}")
    from melset.audio import AudioError
    from melset.track import process
    from melset.track import whole_track as windows

    if top < 1:
        raise UsageError(f"--top must be at least 1, not {top}")
    run = load_run(run_dir, device)
    recipe = run.recipe
    out = []
    for path in files:
        item: dict = {"file": os.fspath(path)}
        try:
            # C decoders (libmpg123) write warnings straight to fd 2; each failure has its reason
            with silenced_stderr():
                if whole_track:
                    x = windows(path, recipe)
                else:
                    result = process(path, recipe)
                    if result.status != OK:
                        raise AudioError(result.error)
                    x = result.mel[None]
        except FileNotFoundError:
            item["error"] = f"file not found: {os.fspath(path)}"
            out.append(item)
            continue
        except AudioError as exc:
            item["error"] = str(exc)
            out.append(item)
            continue
        probs = run.probabilities(x).mean(axis=0)
        order = np.argsort(-probs)[:top]
        item["windows"] = int(len(x))
        item["top"] = [{"genre": run.classes[i], "probability": float(probs[i])} for i in order]
        if run.multi_label:
            item["genres"] = [
                {"genre": run.classes[i], "probability": float(probs[i])}
                for i in np.argsort(-probs)
                if probs[i] >= threshold
            ]
        out.append(item)
    return out
