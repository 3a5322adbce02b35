"""Training: the loop with a per-batch hook, metrics, checkpoints and the checkpoint cache."""

from bnnrobust.train.cache import CachedModel, TrainRequest, checkpoint_dir, train_cached
from bnnrobust.train.checkpoint import Checkpoint, library_versions, load, save
from bnnrobust.train.loop import BatchHook, EpochStats, History, fit, loss_fn
from bnnrobust.train.metrics import (
    accuracy,
    batch_statistics,
    check_input_shape,
    correct,
    correct_fraction,
    eval_mode,
    predict_logits,
)

__all__ = [
    "BatchHook",
    "CachedModel",
    "Checkpoint",
    "EpochStats",
    "History",
    "TrainRequest",
    "accuracy",
    "batch_statistics",
    "check_input_shape",
    "checkpoint_dir",
    "correct",
    "correct_fraction",
    "eval_mode",
    "fit",
    "library_versions",
    "load",
    "loss_fn",
    "predict_logits",
    "save",
    "train_cached",
]
