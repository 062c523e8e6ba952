# The unet3d service image: FastAPI (/health, /v1/*) + the Gradio review UI at /ui, on $PORT (default 8000), run by
# uid 1000. The Hugging Face Space is built from this same file (space/README.md: sdk docker, app_port 8000).
#
#   docker build -t unet3d .                                     # CPU torch, the shipped model
#   docker run --rm -p 8000:8000 unet3d                          # http://localhost:8000/ui/
#
# Build arguments:
#   BASE_IMAGE             any Debian/Ubuntu image; Python 3 + venv are installed with apt when it has none.
#   TORCH_INDEX_URL        where torch comes from. CPU wheels by default; for CUDA use PyTorch's CUDA index, e.g.
#                          --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128, then
#                          `docker run --gpus all -e UNET3D_DEVICE=cuda ...` (the CUDA runtime comes with the wheels).
#   UNET3D_MODEL           a Hub repo id to bake in instead of the shipped model; downloaded and verified at build
#   UNET3D_MODEL_REVISION  time (pin a commit sha), then served from the image's cache with HF_HUB_OFFLINE=1.
#                          Or a model folder under models/ (models/my-model): .dockerignore lets in no other folder.
#                          Private repo: docker build --secret id=HF_TOKEN,env=HF_TOKEN ... (never a build-arg).
#   HF_ENDPOINT            the Hub (or a mirror) UNET3D_MODEL is downloaded from at build time.
#   PORT                   the port uvicorn listens on (also settable at run time with -e PORT=...).
# Air-gapped builders: put a wheelhouse in ./wheels (`pip download -r requirements.txt -d wheels`, gitignored);
# when it holds wheels, pip installs from it alone (--no-index) and never reaches an index. The review UI's viewer
# (NiiVue, pinned in api/ui/static/package-lock.json) comes from the same folder when it holds its npm tarball
# (`python api/ui/bundle.py --download-to wheels`), else from the npm registry; either way checked against the lock.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PORT=8000

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Python: the official python images have it; a bare Debian/Ubuntu base gets the distribution's python3 + venv.
# Packages go into a venv either way (Debian's own pip refuses system-wide installs, PEP 668).
RUN set -eux; \
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -m venv /opt/venv; \
    python --version

# The build context is bind-mounted, not copied, so that a wheelhouse never becomes an image layer.
RUN --mount=type=bind,target=/tmp/context \
    set -eux; \
    if ls /tmp/context/wheels/*.whl >/dev/null 2>&1; then \
        pip install --no-index --find-links /tmp/context/wheels -r /tmp/context/requirements.txt; \
    else \
        pip install --index-url "$TORCH_INDEX_URL" "$(grep -E '^torch==' /tmp/context/requirements.txt)"; \
        pip install -r /tmp/context/requirements.txt; \
    fi; \
    pip check

# Spaces run the container as uid 1000: give it a home, a Hugging Face cache and a Gradio upload folder it owns.
RUN set -eux; \
    if ! getent passwd 1000 >/dev/null; then \
        useradd --uid 1000 --user-group --create-home --home-dir /home/user user; \
    fi; \
    mkdir -p /home/user/app /home/user/.cache/huggingface /home/user/.cache/gradio /home/user/data; \
    chown -R 1000:1000 /home/user
ENV HOME=/home/user \
    HF_HOME=/home/user/.cache/huggingface \
    GRADIO_TEMP_DIR=/home/user/.cache/gradio \
    UNET3D_DATA_DIR=/home/user/data \
    MPLCONFIGDIR=/home/user/.cache/matplotlib \
    GRADIO_ANALYTICS_ENABLED=False \
    HF_HUB_DISABLE_TELEMETRY=1 \
    GRADIO_RUN_HISTORY=False \
    DO_NOT_TRACK=1 \
    PORT=${PORT}
WORKDIR /home/user/app

COPY --chown=1000:1000 requirements.txt pyproject.toml model.yaml ./
COPY --chown=1000:1000 unet3d ./unet3d
COPY --chown=1000:1000 api ./api
COPY --chown=1000:1000 models ./models
USER 1000

# NiiVue for the review UI's viewer, into api/ui/static/node_modules as npm would put it (no node in the image).
RUN --mount=type=bind,target=/tmp/context \
    python api/ui/bundle.py --from /tmp/context/wheels

# Optional: bake a Hub model into the image's cache (downloaded, loaded strictly and checked against its card now).
ARG UNET3D_MODEL=""
ARG UNET3D_MODEL_REVISION=""
ARG HF_ENDPOINT=https://huggingface.co
RUN --mount=type=secret,id=HF_TOKEN,mode=0444,required=false \
    set -eu; \
    if [ -n "$UNET3D_MODEL" ]; then \
        if [ -s /run/secrets/HF_TOKEN ]; then HF_TOKEN="$(cat /run/secrets/HF_TOKEN)"; export HF_TOKEN; fi; \
        HF_HUB_OFFLINE=0 python -c "import json, sys; from unet3d import Segmenter; \
print(json.dumps(Segmenter.from_pretrained(sys.argv[1], sys.argv[2] or None, device='cpu').source.as_dict()))" \
            "$UNET3D_MODEL" "$UNET3D_MODEL_REVISION"; \
    fi
ENV UNET3D_MODEL=${UNET3D_MODEL} \
    UNET3D_MODEL_REVISION=${UNET3D_MODEL_REVISION} \
    HF_HUB_OFFLINE=1

EXPOSE ${PORT}
# Liveness: /health answers whenever the process does (a failing check means restart it). Load balancers and
# Kubernetes' readinessProbe use /ready instead, which is 503 while the model loads and from SIGTERM on.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ['PORT'], timeout=4)"]
# `unet3d serve`: uvicorn with the graceful timeout (UNET3D_GRACEFUL_SHUTDOWN_S) and the proxies it may believe
# (UNET3D_TRUSTED_PROXIES) from the settings; SIGTERM drains, then exits 0. Every hostile-traffic limit but the rate
# limit is on by default; the Space turns that one on with its variables (space/publish.py).
STOPSIGNAL SIGTERM
CMD ["sh", "-c", "exec python -m unet3d.cli serve --host 0.0.0.0 --port \"${PORT:-8000}\""]
