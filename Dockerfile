# edgeprune CPU image: `docker run --rm -v "$PWD:/work" IMAGE compile /work/model.pt ...`
# The install steps are the README's (`pip install -c constraints.txt .` + Debian's
# Fashion-MNIST for the built-in demo), so CI proves both at once.
#
# PyTorch must be the CPU build. Connected builds take it from PyTorch's CPU index (the
# default PIP_EXTRA_INDEX_URL below); air-gapped builds pass a wheelhouse instead:
#   docker build --build-arg PIP_FIND_LINKS=/wheels --build-arg PIP_EXTRA_INDEX_URL= ...
# with the wheels mounted at build time. A plain `pip install torch` would pull several GB
# of CUDA libraries.
ARG BASE_IMAGE=python:3.11.7-slim-bookworm
FROM ${BASE_IMAGE}

ARG PIP_FIND_LINKS=""
ARG PIP_EXTRA_INDEX_URL="https://download.pytorch.org/whl/cpu"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       dataset-fashion-mnist \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/edgeprune
COPY pyproject.toml constraints.txt README.md ./
COPY targets ./targets
COPY edgeprune ./edgeprune
RUN PIP_FIND_LINKS="${PIP_FIND_LINKS}" PIP_EXTRA_INDEX_URL="${PIP_EXTRA_INDEX_URL}" \
    python -m pip install -c constraints.txt . \
    && edgeprune --version

RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin edgeprune
USER edgeprune
WORKDIR /work
ENTRYPOINT ["edgeprune"]
CMD ["--help"]
