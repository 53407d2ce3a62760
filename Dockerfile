# edgeprune CPU image: OpenVINO + ONNX Runtime on x86 CPUs. Usage, CI examples and the
# TensorRT / Jetson variants: docs/docker.md.
#   docker build -t edgeprune:cpu .
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD:/work" edgeprune:cpu \
#       compile /work/model.pt --arch resnet20 --data /work/data --target openvino-cpu \
#       --out /work/out
#
# PyTorch must be the CPU build: a plain `pip install torch` pulls several GB of CUDA
# libraries. Connected builds get it from PyTorch's CPU index (the default
# PIP_EXTRA_INDEX_URL below; the build fails if a CUDA torch slips in). Air-gapped builds
# mount a wheelhouse at build time as the `wheels` build context (empty by default):
#   docker build --build-context wheels=/path/to/wheels \
#       --build-arg PIP_FIND_LINKS=/wheels --build-arg PIP_NO_INDEX=1 -t edgeprune:cpu .
# (podman/buildah take the same flags). With PIP_NO_INDEX=1 the wheelhouse must hold every
# wheel, hatchling included (docs/docker.md shows how to fill it); without it, pip also
# reads PIP_INDEX_URL / PIP_EXTRA_INDEX_URL (pass `--build-arg PIP_EXTRA_INDEX_URL=` where
# PyTorch's index is unreachable; the wheelhouse's torch 2.13.0+cpu still wins over PyPI's
# 2.13.0). Nothing is downloaded at run time: the image runs with `--network none`.
#
# BASE_IMAGE: any Debian bookworm image with python3 >= 3.11 and python3-venv (the test,
# tests/test_container.py, builds on a locally made one: scripts/container/base-image.sh).
ARG BASE_IMAGE=docker.io/library/python:3.11.7-slim-bookworm

# The wheelhouse: replaced by `--build-context wheels=DIR`, empty otherwise.
FROM scratch AS wheels

FROM ${BASE_IMAGE}

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORT_DISABLE_TELEMETRY=1

# Debian's Fashion-MNIST for the built-in demo (`edgeprune demo`), as in the README.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       dataset-fashion-mnist \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

ARG PIP_FIND_LINKS=/wheels
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_NO_INDEX=0

# Dependencies first, from pyproject.toml alone, so that a code change rebuilds only the
# small layer after this one.
WORKDIR /opt/edgeprune
COPY pyproject.toml constraints.txt ./
RUN --mount=type=bind,from=wheels,target=/wheels \
    python -c "import tomllib; project = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
               print(*project['dependencies'], sep='\n')" > requirements.txt \
    && python -m pip install -c constraints.txt -r requirements.txt \
    && python -c "import torch; assert torch.version.cuda is None, torch.__version__" \
    && ! python -m pip list 2>/dev/null | grep -i '^nvidia-'

# The README's install: `pip install -c constraints.txt .`
COPY README.md ./
COPY targets ./targets
COPY edgeprune ./edgeprune
RUN --mount=type=bind,from=wheels,target=/wheels \
    python -m pip install -c constraints.txt . \
    && edgeprune --version

# Non-root by default. Any other uid works too (`--user "$(id -u):$(id -g)"`, so that
# reports in a mounted folder belong to the host user): HOME is writable for every uid.
RUN useradd --create-home --uid 1000 --user-group --shell /usr/sbin/nologin edgeprune \
    && install -d -m 1777 /work /tmp/home
ENV HOME=/tmp/home
USER 1000:1000
WORKDIR /work
ENTRYPOINT ["edgeprune"]
CMD ["--help"]
