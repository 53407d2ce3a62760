"""Bad data: images, labels, layouts, callables and preprocessing options. Each is exit 2
with one error/fix paragraph, no traceback and nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli, run_cli_here
from tests.test_bad_input import assert_bad_input


@pytest.fixture(scope="module")
def fashion_arrays(fashion_small: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(fashion_small) as npz:
        return npz["images"], npz["labels"]


@pytest.fixture
def with_data(compile_args, tiny_state_dict: Path, tmp_path: Path):
    """``compile`` arguments with --data replaced (an .npz written from arrays, or a path)."""
    def make(data=None, *extra: str, images=None, labels=None, **arrays) -> list:
        if data is None:
            data = tmp_path / "data.npz"
            np.savez(data, **({"images": images, "labels": labels} if images is not None
                              else {}), **arrays)
        args = compile_args(tiny_state_dict, *extra)
        args[args.index("--data") + 1] = data
        return args
    return make


def _folder(root: Path, sizes: dict[str, tuple[int, int]], count: int = 30) -> Path:
    for cls, size in sizes.items():
        (root / cls).mkdir(parents=True)
        for i in range(count):
            Image.new("L", size, color=i * 5).save(root / cls / f"{i}.png")
    return root


# --- images -------------------------------------------------------------------------------

def test_images_of_different_sizes_without_input_size(with_data, tmp_path: Path) -> None:
    root = _folder(tmp_path / "mixed", {"a": (28, 28), "b": (32, 30)})
    result = run_cli_here(*with_data(root, "--calib-size", "10"))
    assert_bad_input(result, tmp_path / "out", "different sizes", "28x28", "--input-size")


def test_npz_with_flat_images(with_data, fashion_arrays, tmp_path: Path) -> None:
    images, labels = fashion_arrays
    result = run_cli_here(*with_data(images=images.reshape(len(images), -1), labels=labels))
    assert_bad_input(result, tmp_path / "out", "data.npz", "flat", "reshape(-1, 28, 28)")


def test_npz_with_0_255_float_images(with_data, fashion_arrays, tmp_path: Path) -> None:
    images, labels = fashion_arrays
    result = run_cli_here(*with_data(images=images.astype(np.float32), labels=labels))
    assert_bad_input(result, tmp_path / "out", "data.npz", "[0, 1]", "0-255")


def test_npz_with_normalized_float_images(with_data, fashion_arrays, tmp_path: Path) -> None:
    images, labels = fashion_arrays
    normalized = (images / 255.0 - 0.286) / 0.353
    result = run_cli_here(*with_data(images=normalized.astype(np.float32), labels=labels))
    assert_bad_input(result, tmp_path / "out", "already normalized", "--mean")


def test_npz_with_nan_pixels(with_data, fashion_arrays, tmp_path: Path) -> None:
    images, labels = fashion_arrays
    floats = images.astype(np.float32) / 255
    floats[5, 3, 3] = np.nan
    result = run_cli_here(*with_data(images=floats, labels=labels))
    assert_bad_input(result, tmp_path / "out", "NaN")


def test_npz_with_16_bit_images(with_data, fashion_arrays, tmp_path: Path) -> None:
    images, labels = fashion_arrays
    result = run_cli_here(*with_data(images=images.astype(np.uint16) * 257, labels=labels))
    assert_bad_input(result, tmp_path / "out", "uint16", "[0, 255]")


def test_npz_with_channels_first_images(with_data, fashion_arrays, tmp_path: Path) -> None:
    images, labels = fashion_arrays
    rgb = np.repeat(images[:, None], 3, axis=1)  # N, 3, 28, 28
    result = run_cli_here(*with_data(images=rgb, labels=labels))
    assert_bad_input(result, tmp_path / "out", "channels first", "transpose(0, 2, 3, 1)")


def test_npz_with_two_channel_images(with_data, fashion_arrays, tmp_path: Path) -> None:
    images, labels = fashion_arrays
    result = run_cli_here(*with_data(images=np.stack([images, images], axis=3), labels=labels))
    assert_bad_input(result, tmp_path / "out", "C = 1, 3 or 4")


def test_npz_without_images(with_data, fashion_arrays, tmp_path: Path) -> None:
    images, labels = fashion_arrays
    result = run_cli_here(*with_data(pixels=images, labels=labels))
    assert_bad_input(result, tmp_path / "out", "needs `images` and `labels`")


def test_npz_truncated(with_data, fashion_small: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.npz"
    cut.write_bytes(fashion_small.read_bytes()[:5000])
    assert_bad_input(run_cli_here(*with_data(cut)), tmp_path / "out", "cut.npz", "cannot read")


def test_npz_with_pickled_objects(with_data, fashion_arrays, tmp_path: Path) -> None:
    images, _ = fashion_arrays
    labels = np.array([{"class": 1}] * len(images), dtype=object)
    result = run_cli_here(*with_data(images=images, labels=labels))
    assert_bad_input(result, tmp_path / "out", "data.npz", "object arrays")


def test_data_path_missing(with_data, tmp_path: Path) -> None:
    assert_bad_input(run_cli_here(*with_data(tmp_path / "nope")), tmp_path / "out", "nope",
                     "does not exist")


def test_data_file_of_unknown_format(with_data, tmp_path: Path) -> None:
    csv = tmp_path / "data.csv"
    csv.write_text("label,pixels\n")
    assert_bad_input(run_cli_here(*with_data(csv)), tmp_path / "out", "data.csv",
                     "not a supported format")


def test_idx_images_without_labels(with_data, fashion_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    folder.mkdir()
    name = "t10k-images-idx3-ubyte.gz"
    (folder / name).write_bytes((fashion_dir / name).read_bytes())
    assert_bad_input(run_cli_here(*with_data(folder)), tmp_path / "out", "no matching label file")


# --- labels -------------------------------------------------------------------------------

def test_labels_outside_the_model_classes(with_data, fashion_arrays, tmp_path: Path) -> None:
    images, labels = fashion_arrays
    labels = labels.copy()
    labels[::7] = 12  # a 10-class model
    result = run_cli_here(*with_data(images=images, labels=labels))
    assert_bad_input(result, tmp_path / "out", "outside the model's classes 0-9", "12")


def test_negative_labels(with_data, fashion_arrays, tmp_path: Path) -> None:
    images, labels = fashion_arrays
    labels = labels.astype(np.int64)
    labels[3] = -1
    result = run_cli_here(*with_data(images=images, labels=labels))
    assert_bad_input(result, tmp_path / "out", "negative", "label 3")


def test_fractional_float_labels(with_data, fashion_arrays, tmp_path: Path) -> None:
    images, labels = fashion_arrays
    result = run_cli_here(*with_data(images=images, labels=labels + 0.5))
    assert_bad_input(result, tmp_path / "out", "not whole numbers", "truncate")


def test_string_labels(with_data, fashion_arrays, tmp_path: Path) -> None:
    images, labels = fashion_arrays
    names = np.array(["shirt", "shoe"])[labels % 2]
    result = run_cli_here(*with_data(images=images, labels=names))
    assert_bad_input(result, tmp_path / "out", f"strings (e.g. '{names[0]}')",
                     "class indices")


def test_one_hot_labels(with_data, fashion_arrays, tmp_path: Path) -> None:
    images, labels = fashion_arrays
    result = run_cli_here(*with_data(images=images, labels=np.eye(10)[labels]))
    assert_bad_input(result, tmp_path / "out", "(600, 10)", "argmax")


def test_fewer_labels_than_images(with_data, fashion_arrays, tmp_path: Path) -> None:
    images, labels = fashion_arrays
    result = run_cli_here(*with_data(images=images, labels=labels[:-3]))
    assert_bad_input(result, tmp_path / "out", "600 images but 597 labels")


def test_training_labels_outside_the_model_classes(with_data, fashion_arrays,
                                                   tmp_path: Path) -> None:
    """Checked at load when a training stage will read them (here: pruning + recovery)."""
    images, labels = fashion_arrays
    train = tmp_path / "train.npz"
    bad = labels.copy()
    bad[-1] = 10
    np.savez(train, images=images, labels=bad)
    result = run_cli_here(*with_data(None, "--train-data", train, "--prune", "l1", "--prune-ratio",
                                "0.3", images=images, labels=labels))
    assert_bad_input(result, tmp_path / "out", "train.npz", "train labels", "0-9")


# --- datasets from a callable --------------------------------------------------------------

@pytest.fixture
def dataset_module(tmp_path: Path):
    def make(body: str) -> dict[str, str]:
        pkg = tmp_path / "pkg"
        pkg.mkdir(exist_ok=True)
        (pkg / "userdata.py").write_text(
            "import numpy as np\n"
            "IMAGES = (np.arange(200 * 28 * 28) % 251).astype(np.uint8).reshape(200, 28, 28)\n"
            + body)
        return {"PYTHONPATH": str(pkg)}
    return make


@pytest.mark.parametrize(("body", "needle"), [
    ("def build():\n    return [IMAGES[i] for i in range(200)]\n", "not an (image, label)"),
    ("def build():\n    return [(IMAGES[i], 1, 'x') for i in range(200)]\n", "3-element"),
], ids=["image-only", "triples"])
def test_callable_with_malformed_items(with_data, dataset_module, tmp_path: Path,
                                       body: str, needle: str) -> None:
    result = run_cli(*with_data("userdata:build"), env=dataset_module(body))
    assert_bad_input(result, tmp_path / "out", "userdata:build", needle)


def test_callable_with_string_labels(with_data, dataset_module, tmp_path: Path) -> None:
    env = dataset_module("def build():\n    return [(IMAGES[i], 'coat') for i in range(200)]\n")
    result = run_cli(*with_data("userdata:build"), env=env)
    assert_bad_input(result, tmp_path / "out", "'coat'", "class indices")


def test_callable_that_raises(with_data, dataset_module, tmp_path: Path) -> None:
    env = dataset_module("def build():\n    raise FileNotFoundError('/data/train.csv')\n")
    result = run_cli(*with_data("userdata:build"), env=env)
    assert_bad_input(result, tmp_path / "out", "userdata:build", "/data/train.csv")


def test_callable_returning_an_empty_dataset(with_data, dataset_module, tmp_path: Path) -> None:
    env = dataset_module("def build():\n    return []\n")
    result = run_cli(*with_data("userdata:build"), env=env)
    assert_bad_input(result, tmp_path / "out", "empty dataset")


def test_callable_returning_no_dataset(with_data, dataset_module, tmp_path: Path) -> None:
    env = dataset_module("def build():\n    return (x for x in range(3))\n")
    result = run_cli(*with_data("userdata:build"), env=env)
    assert_bad_input(result, tmp_path / "out", "generator", "__len__")


def test_callable_with_an_image_that_is_not_an_image(with_data, dataset_module,
                                                     tmp_path: Path) -> None:
    env = dataset_module("def build():\n    return [({'px': 1}, 0) for i in range(200)]\n")
    result = run_cli(*with_data("userdata:build"), env=env)
    assert_bad_input(result, tmp_path / "out", "the image is dict")


# --- splits and preprocessing options ------------------------------------------------------

def test_calibration_larger_than_the_data(with_data, fashion_small: Path,
                                          tmp_path: Path) -> None:
    result = run_cli_here(*with_data(fashion_small, "--calib-size", "700"))
    assert_bad_input(result, tmp_path / "out", "600 images", "too few")


def test_resize_without_input_size(with_data, fashion_small: Path, tmp_path: Path) -> None:
    result = run_cli_here(*with_data(fashion_small, "--resize", "32"))
    assert_bad_input(result, tmp_path / "out", "--resize 32 needs --input-size")


def test_resize_smaller_than_the_crop(with_data, fashion_small: Path, tmp_path: Path) -> None:
    result = run_cli_here(*with_data(fashion_small, "--resize", "20", "--input-size", "28"))
    assert_bad_input(result, tmp_path / "out", "smaller than --input-size")


@pytest.mark.parametrize("size", ["abc", "0", "28x28x3"])
def test_input_size_that_is_not_a_size(with_data, fashion_small: Path, tmp_path: Path,
                                       size: str) -> None:
    result = run_cli_here(*with_data(fashion_small, "--input-size", size))
    assert_bad_input(result, tmp_path / "out", "--input-size")


def test_mean_that_is_not_numbers(with_data, fashion_small: Path, tmp_path: Path) -> None:
    args = with_data(fashion_small)
    args[args.index("--mean") + 1] = "0.5,zero"
    assert_bad_input(run_cli_here(*args), tmp_path / "out", "--mean", "comma-separated")


def test_std_with_too_many_values(with_data, fashion_small: Path, tmp_path: Path) -> None:
    args = with_data(fashion_small)
    args[args.index("--std") + 1] = "0.2,0.2,0.2"
    assert_bad_input(run_cli_here(*args), tmp_path / "out", "--std has 3 values", "1 channels")


def test_unsupported_channel_count(with_data, fashion_small: Path, tmp_path: Path) -> None:
    args = with_data(fashion_small)
    args[args.index("--channels") + 1] = "2"
    assert_bad_input(run_cli_here(*args), tmp_path / "out", "--channels 2")


# --- a rule that is accepted, not refused ---------------------------------------------------

def test_float_images_are_pixels_in_0_1(fashion_arrays) -> None:
    """Float images (an .npz, IDX) are pixels on [0, 1] (README): they preprocess to what
    the same uint8 images do, resized or not."""
    from edgeprune.data.preprocess import Preprocess
    from edgeprune.data.sources import ArraySource

    images, labels = fashion_arrays
    as_u8 = ArraySource(images[:8], labels[:8], "u8", "")
    as_f32 = ArraySource(images[:8].astype(np.float32) / 255.0, labels[:8], "f32", "")
    for pre in (Preprocess(channels=1, mean=[0.286], std=[0.353]),
                Preprocess(channels=3, input_size=(32, 32), resize=36)):
        pre.validate()
        for i in range(8):
            np.testing.assert_allclose(pre(as_f32.image(i)), pre(as_u8.image(i)), atol=0.02)
