"""Training inputs of compensation, recovery and QAT: a clear exit 2 when the training
split or the teacher cannot serve, a warning when the split is only the few images held
out of the evaluation set -- all before any stage runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeprune.zoo import fashion_cnn
from tests.conftest import FASHION_ARGS, run_cli
from tests.test_bad_input import assert_input_error, assert_nothing_written

PRUNE = ["--prune", "dscore", "--prune-ratio", "0.3", "--recover-steps", "2",
         "--iterations", "20", "--eval-limit", "200"]


def _npz(path: Path, source: Path, count: int) -> Path:
    with np.load(source) as npz:
        np.savez(path, images=npz["images"][:count], labels=npz["labels"][:count])
    return path


def test_training_split_smaller_than_a_batch(fashion_ckpt: Path, fashion_small: Path,
                                             tmp_path: Path) -> None:
    train = _npz(tmp_path / "train40.npz", fashion_small, 40)
    out = tmp_path / "out"
    result = run_cli("compile", fashion_ckpt, "--eval-data", fashion_small, "--train-data",
                     train, *FASHION_ARGS, *PRUNE, "--out", out)
    assert_input_error(result, "recovery needs a training split", "40 images", "--train-data")
    assert_nothing_written(out)


def test_compensation_alone_still_needs_training_images(fashion_ckpt: Path,
                                                        fashion_small: Path,
                                                        tmp_path: Path) -> None:
    train = _npz(tmp_path / "train12.npz", fashion_small, 12)
    out = tmp_path / "out"
    result = run_cli("compile", fashion_ckpt, "--eval-data", fashion_small, "--train-data",
                     train, *FASHION_ARGS, *PRUNE, "--recover", "none", "--calib-size", "12",
                     "--out", out)
    assert_input_error(result, "compensation needs a training split", "two per class")
    assert_nothing_written(out)


def test_teacher_with_other_outputs_is_refused(fashion_ckpt: Path, fashion_small: Path,
                                               tmp_path: Path) -> None:
    teacher = tmp_path / "teacher7.pt"
    torch.save(fashion_cnn(num_classes=7).state_dict(), teacher)
    out = tmp_path / "out"
    result = run_cli("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS, *PRUNE,
                     "--recover-batch", "32", "--teacher", teacher, "--teacher-arch",
                     "fashion_cnn", "--teacher-arch-kwargs", '{"num_classes": 7}',
                     "--out", out)
    assert_input_error(result, "teacher7.pt", "7 outputs", "10")
    assert_nothing_written(out)


def test_teacher_options_need_a_teacher(fashion_ckpt: Path, fashion_small: Path,
                                        tmp_path: Path) -> None:
    result = run_cli("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS,
                     "--teacher-arch", "fashion_cnn", "--out", tmp_path / "out")
    assert_input_error(result, "--teacher-arch", "only applies to --teacher")


def test_unknown_compensation_and_recovery_modes(fashion_ckpt: Path, fashion_small: Path,
                                                 tmp_path: Path) -> None:
    base = ["compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS, *PRUNE,
            "--out", tmp_path / "out"]
    assert_input_error(run_cli(*base, "--compensate", "magic"), "--compensate", "refit")
    assert_input_error(run_cli(*base, "--recover", "magic"), "--recover", "kd")
    assert_input_error(run_cli(*base, "--kd-weight", "1.5"), "--kd-weight")
    assert_input_error(run_cli(*base[:4], *FASHION_ARGS, "--compensate", "mean",
                               "--out", tmp_path / "o2"), "--compensate", "--prune")
    assert_nothing_written(tmp_path / "out")


def test_held_out_training_split_warns_and_distills_from_a_teacher(
        fashion_ckpt: Path, fashion_small: Path, tmp_path: Path) -> None:
    """Only --data: recovery trains on the calibration images held out of it -- allowed,
    with a warning; --teacher (here the input model itself) is what distillation uses."""
    out = tmp_path / "out"
    result = run_cli("compile", fashion_ckpt, "--data", fashion_small, *FASHION_ARGS, *PRUNE,
                     "--recover-batch", "32", "--teacher", fashion_ckpt, "--max-drop", "100",
                     "--out", out)
    assert result.code == 0, result.stderr
    stderr = " ".join(result.stderr.split())  # the console wraps long lines
    assert "calibration images held out of the evaluation set" in stderr
    assert (out / "01-load" / "teacher.pt").is_file()
    recover = (out / "04-recover" / "metrics.json").read_text()
    assert "held out" in recover and '"loss": "kd"' in recover
