"""The Docker image (Dockerfile), built and run with podman the way CI/CD runs it.

Skips without podman, or when not root (rootful podman keeps its storage in the cache
folder below). No registry is reachable here, so the base image is made locally by
scripts/container/base-image.sh. The first run on a machine costs minutes; later runs
reuse podman's storage in EDGEPRUNE_PODMAN_CACHE (default /var/cache/edgeprune-podman):
the base image, the build layers, and the built image itself while the hash of its build
context (Dockerfile, .dockerignore's allowlist, build flags, base image, wheelhouse) is
unchanged. The image is always run. Measurements go to out/container/measurements.json
and to the terminal.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import torch

import edgeprune
from edgeprune.config import list_targets
from edgeprune.report.build import schema
from tests.conftest import FASHION_ARGS, REPO, CliResult

pytestmark = pytest.mark.container

CACHE = Path(os.environ.get("EDGEPRUNE_PODMAN_CACHE", "/var/cache/edgeprune-podman"))
BASE_IMAGE = "localhost/bookworm-py:latest"
IMAGE_REPO = "localhost/edgeprune"
# The host user the container runs as (`--user UID:GID`), as `docker run --user "$(id -u):
# $(id -g)"` would on a CI runner; the test itself runs as root, so it stands in for one.
# Deliberately not the image's own user (1000): any uid must work.
HOST_USER = (2000, 2000)
MEASURED = REPO / "out" / "container" / "measurements.json"
KEEP_IMAGES = 3  # built images kept in the cache (the layers they share are stored once)


def podman(env: dict[str, str], *args: str | Path, timeout: int = 300,
           check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"podman {args[0]} failed:\n{proc.stderr[-3000:]}"
    return proc


def run_image(env: dict[str, str], image: str, *args: str | Path,
              user: tuple[int, int] | None = HOST_USER,
              mounts: tuple[tuple[Path, str, str], ...] = (),
              entrypoint: str | None = None) -> tuple[CliResult, float]:
    """`podman run` IMAGE ARGS without a network (nothing may be downloaded at run time);
    mounts are (host folder, container folder, "ro"|"rw"). Returns the result and the
    wall time in seconds."""
    cmd = ["podman", "run", "--rm", "--network", "none"]
    if user is not None:
        cmd += ["--user", f"{user[0]}:{user[1]}"]
    for src, dst, mode in mounts:
        cmd += ["--volume", f"{src}:{dst}:{mode}"]
    if entrypoint is not None:
        cmd += ["--entrypoint", entrypoint]
    start = time.monotonic()
    proc = subprocess.run([*cmd, image, *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=900)
    return CliResult(proc.returncode, proc.stdout, proc.stderr), time.monotonic() - start


@functools.cache
def pip_config() -> dict[str, list[str]]:
    """This venv's pip settings (`pip config list`): option name -> values."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                            capture_output=True, text=True).stdout
    settings: dict[str, list[str]] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        settings.setdefault(key.rsplit(".", 1)[-1], []).extend(value.strip("'\"").split())
    return settings


@functools.cache
def wheelhouse() -> Path | None:
    """A folder holding this venv's torch wheel (the CPU build): EDGEPRUNE_WHEELHOUSE, else
    pip's own find-links. None: a connected build from PyTorch's CPU index."""
    candidates = [os.environ.get("EDGEPRUNE_WHEELHOUSE", ""),
                  *os.environ.get("PIP_FIND_LINKS", "").split(),
                  *pip_config().get("find-links", [])]
    for folder in filter(None, candidates):
        if any(Path(folder).glob(f"torch-{torch.__version__}-*.whl")):
            return Path(folder)
    return None


def pip_index_url() -> str | None:
    """The host's pip index (a mirror, say), when it is one the container can reach."""
    urls = pip_config().get("index-url", [])
    return next((u for u in urls if u.startswith(("http://", "https://"))), None)


def build_flags() -> list[str]:
    flags = ["--build-arg", f"BASE_IMAGE={BASE_IMAGE}"]
    wheels = wheelhouse()
    if wheels is not None:
        # the CPU torch comes from the wheelhouse, so PyTorch's index is not needed
        flags += ["--build-context", f"wheels={wheels}", "--build-arg", "PIP_FIND_LINKS=/wheels",
                  "--build-arg", "PIP_EXTRA_INDEX_URL="]
    index = pip_index_url()
    if index is not None:
        flags += ["--build-arg", f"PIP_INDEX_URL={index}"]
    return flags


def context_files() -> list[Path]:
    """The build context: .dockerignore is an allowlist (`*`, then `!path` lines)."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    files: list[Path] = []
    for name in (line[1:].strip() for line in lines if line.startswith("!")):
        path = REPO / name
        files += [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sorted(p for p in files if "__pycache__" not in p.parts and p.suffix != ".pyc")


def context_hash(flags: list[str], base_id: str) -> str:
    digest = hashlib.sha256()
    for path in [REPO / "Dockerfile", REPO / ".dockerignore", *context_files()]:
        digest.update(f"{path.relative_to(REPO)}\0".encode() + path.read_bytes() + b"\0")
    wheels = wheelhouse()
    listing = sorted((p.name, p.stat().st_size) for p in wheels.glob("*.whl")) if wheels else []
    digest.update(json.dumps([flags, base_id, listing]).encode())
    return digest.hexdigest()[:16]


def read_report(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, schema())
    return report


def owners(root: Path) -> set[tuple[int, int]]:
    stats = [p.lstat() for p in [root, *root.rglob("*")]]
    return {(s.st_uid, s.st_gid) for s in stats}


def host_user_dir(path: Path) -> Path:
    """An output folder owned by HOST_USER, as a runner's checkout would be."""
    path.mkdir(parents=True)
    os.chown(path, *HOST_USER)
    return path


@pytest.fixture(scope="module")
def measured(request: pytest.FixtureRequest):
    """Numbers the tests measure; written to MEASURED and shown at the end."""
    numbers: dict = {}
    yield numbers
    MEASURED.parent.mkdir(parents=True, exist_ok=True)
    MEASURED.write_text(json.dumps(numbers, indent=2) + "\n")
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None and numbers:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\ncontainer test: {json.dumps(numbers)}")


@pytest.fixture(scope="module")
def podman_env(measured: dict) -> dict[str, str]:
    """podman set up to keep its storage in CACHE, with the local base image there."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install podman buildah debootstrap "
                    "runc; .ci/run does this in CI)")
    if os.geteuid() != 0:
        pytest.skip(f"needs root: rootful podman keeps its image storage in {CACHE}")
    start = time.monotonic()
    proc = subprocess.run([REPO / "scripts" / "container" / "base-image.sh", CACHE, BASE_IMAGE],
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"base image failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    measured["base_image_s"] = round(time.monotonic() - start, 1)
    measured["base_image"] = proc.stdout.strip()
    exports = (CACHE / "podman.env").read_text().split()
    settings = dict(item.split("=", 1) for item in exports if "=" in item)
    return {**os.environ, **settings}


@pytest.fixture(scope="module")
def image(podman_env: dict[str, str], measured: dict) -> str:
    """The CPU image, built from the local base unless one with the same context exists."""
    flags = build_flags()
    base_id = podman(podman_env, "image", "inspect", "--format", "{{.Id}}",
                     BASE_IMAGE).stdout.strip()
    tag = f"{IMAGE_REPO}:cpu-{context_hash(flags, base_id)}"
    measured.update(image=tag, wheelhouse=str(wheelhouse()))
    if podman(podman_env, "image", "exists", tag, check=False).returncode == 0:
        measured["build"] = "reused (build context unchanged)"
    else:
        log = CACHE / "logs" / f"build-{tag.rsplit(':', 1)[1]}.log"
        log.parent.mkdir(exist_ok=True)
        start = time.monotonic()
        with log.open("w") as stream:
            proc = subprocess.run(["podman", "build", *flags, "--tag", tag, "--file",
                                   REPO / "Dockerfile", REPO], env=podman_env,
                                  stdout=stream, stderr=subprocess.STDOUT, timeout=3600)
        assert proc.returncode == 0, f"podman build failed ({log}):\n{log.read_text()[-4000:]}"
        measured["build"] = "built"
        measured["build_s"] = round(time.monotonic() - start, 1)
        # keep the newest few images (branches alternating on one runner), drop older ones
        listed = podman(podman_env, "images", "--sort", "created", "--format",
                        "{{.Repository}}:{{.Tag}}", "--filter",
                        f"reference={IMAGE_REPO}:cpu-*").stdout.split()
        for old in [t for t in listed if t != tag][KEEP_IMAGES - 1:]:
            podman(podman_env, "rmi", old, check=False)
            (log.parent / f"build-{old.rsplit(':', 1)[1]}.log").unlink(missing_ok=True)
    size = podman(podman_env, "image", "inspect", "--format", "{{.Size}}", tag).stdout
    measured["image_size_mb"] = round(int(size) / 1e6)
    return tag


def test_image_runs_as_non_root_with_edgeprune_entrypoint(podman_env: dict[str, str],
                                                          image: str):
    config = json.loads(podman(podman_env, "image", "inspect", image).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["edgeprune"]
    assert config["User"].split(":")[0] not in ("", "0", "root")
    # the image's default user (no --user), as `docker run IMAGE --version` runs it
    result, _ = run_image(podman_env, image, "--version", user=None)
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == f"edgeprune {edgeprune.__version__}"
    # the same PyTorch CPU build as this venv, without CUDA
    result, _ = run_image(podman_env, image, "-c", "import torch; print(torch.__version__, "
                          "torch.version.cuda)", entrypoint="python")
    assert result.code == 0, result.stderr
    assert result.stdout.split() == [torch.__version__, "None"]


def test_targets_listed_inside(podman_env: dict[str, str], image: str):
    result, _ = run_image(podman_env, image, "targets", "--json")
    assert result.code == 0, result.stderr
    assert [t["name"] for t in json.loads(result.stdout)] == [t.name for t in list_targets()]


def _pytorch_top1(images: Path, labels: Path) -> float:
    """The shipped Fashion-MNIST CNN's top-1 on the Debian test set, in this PyTorch."""
    from edgeprune.data.idx import read_idx
    from edgeprune.examples import FASHION_MNIST
    from edgeprune.examples.paths import checkpoint_path
    from edgeprune.zoo import fashion_cnn

    model = fashion_cnn().eval()
    model.load_state_dict(torch.load(checkpoint_path(), weights_only=True)["state_dict"])
    x = torch.from_numpy(read_idx(images)).float().div(255).unsqueeze(1)
    x = (x - FASHION_MNIST["mean"]) / FASHION_MNIST["std"]
    y = torch.from_numpy(read_idx(labels)).long()
    with torch.no_grad():
        correct = sum(int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum())
                      for i in range(0, len(y), 1000))
    return 100.0 * correct / len(y)


def test_demo_runs_inside(podman_env: dict[str, str], image: str, tmp_path: Path,
                          measured: dict, fashion_dir: Path):
    """The built-in demo (the image's own Fashion-MNIST: prune, recover, INT8) as
    HOST_USER, reports in a mounted folder. Its baseline is the accuracy this venv's
    PyTorch computes for the same model and images; its verdict matches its exit code.
    (Not the same final top-1 as a run outside: recovery training and INT8 may differ by
    a few images across processes, and the budget margin is under a point.)"""
    out = host_user_dir(tmp_path / "out")
    inside, inside_s = run_image(podman_env, image, "demo", "--out", "/out/demo", "--quiet",
                                 mounts=((out, "/out", "rw"),))
    assert inside.code in (0, 3), inside.stderr
    report = read_report(out / "demo")
    measured.update(demo_inside_s=round(inside_s, 1), demo_exit_inside=inside.code,
                    demo_passed_inside=report["passed"],
                    demo_top1_inside=report["final"]["accuracy"])
    assert report["passed"] is (inside.code == 0)
    expected = _pytorch_top1(fashion_dir / "t10k-images-idx3-ubyte.gz",
                             fashion_dir / "t10k-labels-idx1-ubyte.gz")
    assert report["baseline"]["accuracy"] == pytest.approx(expected, abs=0.01)
    assert report["final"]["accuracy_runtime"] == "openvino"
    assert report["pruning"]["flops_reduction"] == pytest.approx(0.5, abs=0.02)
    assert owners(out) == {HOST_USER}


def test_compile_on_mounted_inputs_exits_3_when_budget_missed(
        podman_env: dict[str, str], image: str, fashion_ckpt: Path, fashion_small: Path,
        tmp_path: Path):
    """What a CI job does: a model and data from a read-only mount, a report into a mounted
    folder, and exit code 3 for an unreachable latency budget."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(fashion_ckpt, inputs / "model.pt")
    shutil.copy(fashion_small, inputs / "fashion600.npz")
    for path in [inputs, *inputs.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    out = host_user_dir(tmp_path / "out")
    result, _ = run_image(
        podman_env, image, "compile", "/in/model.pt", "--arch", "fashion_cnn",
        "--data", "/in/fashion600.npz", *FASHION_ARGS, "--target", "openvino-cpu",
        "--precision", "int8", "--iterations", "120", "--calib-size", "100",
        "--latency-ms", "0.0001", "--percentile", "p99", "--out", "/out/run",
        mounts=((inputs, "/in", "ro"), (out, "/out", "rw")))
    assert result.code == 3, result.stderr
    assert "MISSED" in result.stdout
    report = read_report(out / "run")
    assert report["passed"] is False and report["verdict"]["latency_ok"] is False
    assert report["final"]["runtime"]["effective_precision"] == "i8"
    assert owners(out) == {HOST_USER}
    assert sorted(p.name for p in inputs.iterdir()) == ["fashion600.npz", "model.pt"]
