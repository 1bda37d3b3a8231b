"""Target classifiers for the black-box attacks, in parts: ``architectures`` (the models), ``registry`` (TARGETS,
their names and weight files), ``loading`` (`load_target`, `load_checkpoint_file`), ``checks``
(`check_model_outputs`), ``training`` (`train_target`, `fit`, `accuracy`, checkpoints) and ``digits_cnn`` (the
embedded digits target, trained on the fly). This module gathers their public names, so that
``from zol2l_ext import models as M`` reaches all of them.

A target may be given by registry name or as a path to a checkpoint written by `train_target` (or a bare
state_dict of one of the architectures).
"""
from __future__ import annotations

from .architectures import (ARCHS, CWCNN, DIGITS_MEAN, DIGITS_STD, Cifar10StagedCNN, DigitsCNN, MnistAuthorsCNN,
                            Normalize, build_model)
from .checks import OUTPUT_KINDS, ModelOutputError, check_model_outputs
from .loading import LoadedTarget, channels_last_on_cpu, frozen_eval_model, load_checkpoint_file, load_target
from .registry import (ARCH_NAMES, DEFAULT_TARGETS, TARGETS, TargetSpec, own_target_candidates, own_target_path,
                       target_name)
from .training import CHECKPOINT_FORMAT, TRAIN_DEFAULTS, accuracy, fit, save_checkpoint, train_target

__all__ = ["ARCHS", "ARCH_NAMES", "CWCNN", "CHECKPOINT_FORMAT", "Cifar10StagedCNN", "DEFAULT_TARGETS",
           "DIGITS_MEAN", "DIGITS_STD", "DigitsCNN", "LoadedTarget", "MnistAuthorsCNN", "ModelOutputError",
           "Normalize", "OUTPUT_KINDS", "TARGETS", "TRAIN_DEFAULTS", "TargetSpec", "accuracy", "build_model",
           "channels_last_on_cpu", "check_model_outputs", "fit", "frozen_eval_model", "load_checkpoint_file",
           "load_target", "own_target_candidates", "own_target_path", "save_checkpoint", "target_name", "train_target"]
