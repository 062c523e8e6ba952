#!/usr/bin/env bash
# The kit the GPU benchmark call carries (.devcarry/, gitignored): the wheels that bench/gpu.py, bench/cohort.py,
# bench/io.py and bench/load.py need beyond what the GPU machine has (Python 3.12, torch CUDA, numpy, scipy,
# scikit-image, safetensors, pyyaml, pandas, huggingface_hub, psutil), and a copy of scripts/bench-gpu.sh.
#   bash scripts/build-bench-kit.sh                     # .devcarry/whl-bench for the GPU machine (cp312)
#   PY=3.11 KIT=/tmp/kit311 bash scripts/build-bench-kit.sh   # the same set for a CPU rehearsal in a 3.11 venv
# Versions are requirements.txt's pins (pydantic-core, greenlet, MarkupSafe, Mako, h11, click, httpcore, certifi,
# annotated-types, typing-inspection, python-dotenv, anyio, idna: those the pins resolve to on the build machine).
# No Gradio (~60 MB): the benchmark serves the HTTP API alone (api.main:create_api_app). Total ~16 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-3.12}
KIT=${KIT:-.devcarry/whl-bench}
tag=cp${PY/./}
mkdir -p "$KIT"
pin() { grep -i -E "^$1==" requirements.txt | head -n 1; }
wheels=(
  "$(pin nibabel)" "$(pin isal)" "$(pin pydicom)" "$(pin tqdm)"
  "$(pin fastapi)" "$(pin starlette)" "$(pin uvicorn)" "$(pin pydantic)" "$(pin pydantic-settings)"
  "$(pin python-multipart)" "$(pin prometheus_client)" "$(pin fastapi-offline)" "$(pin SQLAlchemy)" "$(pin alembic)"
  pydantic_core==2.50.5 python-dotenv==1.2.4 typing-inspection==0.4.5 annotated-types==0.8.0 anyio==4.16.0
  idna==3.20 h11==0.16.0 click==8.5.1 greenlet==3.5.6 Mako==1.4.3 MarkupSafe==3.0.4 typing_extensions==4.16.0
  httpx==0.28.1 httpcore==1.0.9 certifi==2026.10.19.post1 packaging==26.4 annotated-doc==0.0.7 opentelemetry-api==1.45.2
  pytest==9.2.0 pytest-timeout==2.4.0 pluggy==1.7.0 iniconfig==2.3.1 Pygments==2.21.0
)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp --abi "$tag" \
  --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64 --platform any -d "$KIT" "${wheels[@]}"
cp scripts/bench-gpu.sh "$(dirname "$KIT")/bench-gpu.sh"
du -sh "$KIT"
