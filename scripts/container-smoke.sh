#!/usr/bin/env bash
# Build the service image from the root Dockerfile with podman and check it from outside, on loopback:
#   /health is 200, POST /v1/predict of the MNI152 T1 returns a mask with the input's shape and affine, /ui/ serves
#   (with the review viewer's NiiVue bundle, built into the image from the wheelhouse's npm tarball),
#   the processes inside run as uid 1000 and none as root, the HEALTHCHECK passes, and a second build that bakes in a
#   Hub model (from a loopback FakeHub, pinned to a commit sha) serves it with HF_HUB_OFFLINE=1.
# Works on a fresh Debian machine without a container engine or registry access: installs podman from Debian
# packages, builds a base image with debootstrap when BASE_IMAGE cannot be pulled, installs Python packages from a
# wheelhouse (pip download into ./wheels, with NiiVue's npm tarball beside the wheels). Always removes its containers
# and images.
#
# Usage: scripts/container-smoke.sh            (as root, or with sudo; about 3-5 minutes, 1-2 with warm caches)
# Env:   BASE_IMAGE (default python:3.11-slim), UNET3D_SMOKE_CACHE (default ~/.cache/unet3d-container: the
#        debootstrap tarball and the wheelhouse), UNET3D_SMOKE_HUB=0 skips the baked-in Hub model build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${UNET3D_SMOKE_CACHE:-$HOME/.cache/unet3d-container}
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
SUITE=bookworm
RUN_ID=$$-$RANDOM
IMAGE=localhost/unet3d-smoke:$RUN_ID
HUB_IMAGE=localhost/unet3d-smoke-hub:$RUN_ID
LOCAL_BASE=localhost/unet3d-smoke-base:$SUITE
WORK=$(mktemp -d)
SUDO=()
[[ $(id -u) -eq 0 ]] || SUDO=(sudo)
PY=$ROOT/.venv/bin/python
[[ -x $PY ]] || PY=$(command -v python3)
EXAMPLE=api/examples/mni152_t1.nii.gz
[[ -f $EXAMPLE ]] || EXAMPLE=$("$PY" -c "import nilearn, pathlib; print(pathlib.Path(nilearn.__file__).parent / \
'datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz')")
START=$SECONDS
CONTAINERS=()
IMAGES=()
HUB_PID=""
MADE_WHEELS=""

step() { printf '[%4ss] %s\n' "$((SECONDS - START))" "$*"; }
fail() { printf 'container-smoke: FAILED: %s\n' "$*" >&2; exit 1; }
podman() { "${SUDO[@]}" env CONTAINERS_CONF="$WORK/containers.conf" podman "$@"; }

cleanup() {
  local status=$?
  for name in "${CONTAINERS[@]}"; do
    [[ -n $name ]] || continue
    [[ $status -ne 0 ]] && { echo "--- logs of $name"; podman logs --tail 40 "$name" 2>&1 || true; }
    podman rm -f -t 2 "$name" >/dev/null 2>&1 || true
  done
  if [[ -n $HUB_PID ]]; then kill "$HUB_PID" 2>/dev/null || true; fi
  for image in "${IMAGES[@]}"; do podman rmi -f "$image" >/dev/null 2>&1 || true; done
  [[ -n $MADE_WHEELS ]] && rm -rf "$ROOT/wheels"
  rm -rf "$WORK"
  step "cleaned up (exit $status)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_podman() {
  command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null && return
  step "installing podman, runc and debootstrap from Debian packages"
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc conmon netavark \
    aardvark-dns containernetworking-plugins fuse-overlayfs uidmap slirp4netns catatonit debootstrap >/dev/null
}

configure_engine() {
  # crun fails on hybrid cgroups and podman's default ulimits exceed this machine's hard limits (see
  # ../shared/notes/container-verified.md); no systemd/journald here either.
  local nofile
  nofile=$(ulimit -Hn)
  cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
}

debian_mirror() {
  local uri
  uri=$(grep -hoE '^(URIs:\s*|deb\s+(\[[^]]*\]\s+)?)https?://[^ ]+/debian/?( |$)' \
    /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | grep -oE 'https?://[^ ]+' | head -1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

build_local_base() {
  # A Debian base made from Debian packages, for builders that cannot pull from a container registry.
  local tarball=$CACHE/debian-$SUITE-python3.tar.gz
  if [[ ! -s $tarball ]]; then
    step "debootstrap $SUITE (python3, venv, CA certificates) -> $tarball"
    local rootfs=$WORK/rootfs
    "${SUDO[@]}" debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      "$SUITE" "$rootfs" "$(debian_mirror)" >"$WORK/debootstrap.log" 2>&1 || {
      tail -20 "$WORK/debootstrap.log"
      fail "debootstrap"
    }
    # apt sources and the host's trust store (HTTPS from a build on this machine needs the host's CAs)
    "${SUDO[@]}" cp -r /etc/apt/sources.list.d/. "$rootfs/etc/apt/sources.list.d/" 2>/dev/null || true
    [[ -f /etc/apt/sources.list ]] && "${SUDO[@]}" cp /etc/apt/sources.list "$rootfs/etc/apt/sources.list"
    "${SUDO[@]}" cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    "${SUDO[@]}" cp -r /usr/local/share/ca-certificates/. "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' | "${SUDO[@]}" tee "$rootfs/etc/pip.conf" >/dev/null
    "${SUDO[@]}" rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    mkdir -p "$CACHE"
    "${SUDO[@]}" tar -C "$rootfs" -czf "$tarball.part" . && mv "$tarball.part" "$tarball"
    "${SUDO[@]}" rm -rf "$rootfs"
  fi
  step "importing the Debian base image"
  podman import --quiet "$tarball" "$LOCAL_BASE" >/dev/null
  IMAGES+=("$LOCAL_BASE")
  BASE_IMAGE=$LOCAL_BASE
}

choose_base() {
  if podman image exists "$BASE_IMAGE"; then
    step "base image $BASE_IMAGE is present"
  elif timeout 60 "${SUDO[@]}" env CONTAINERS_CONF="$WORK/containers.conf" podman pull --quiet "$BASE_IMAGE" \
    >/dev/null 2>&1; then
    step "pulled base image $BASE_IMAGE"
  else
    step "cannot pull $BASE_IMAGE: building a base from Debian packages"
    build_local_base
  fi
}

prepare_wheelhouse() {
  if ls "$ROOT"/wheels/*.whl >/dev/null 2>&1; then
    step "using the existing wheelhouse ./wheels"
    "$PY" api/ui/bundle.py --download-to "$ROOT/wheels" >/dev/null || fail "NiiVue's npm tarball for ./wheels"
    return
  fi
  local stamp
  stamp=$(sha256sum requirements.txt | cut -d' ' -f1)
  if [[ $(cat "$CACHE/wheels/.requirements.sha256" 2>/dev/null) != "$stamp" ]]; then
    step "wheelhouse: pip download -r requirements.txt -> $CACHE/wheels"
    mkdir -p "$CACHE/wheels"
    "$PY" -m pip download -q --only-binary=:all: -r requirements.txt -d "$CACHE/wheels" 2>&1 |
      { grep -v "^WARNING: Location 'file:" || true; }
    echo "$stamp" >"$CACHE/wheels/.requirements.sha256"
  else
    step "wheelhouse: cached in $CACHE/wheels"
  fi
  # The review viewer's NiiVue as api/ui/static/package-lock.json pins it (a cached copy that matches is kept).
  "$PY" api/ui/bundle.py --download-to "$CACHE/wheels" >/dev/null || fail "NiiVue's npm tarball"

  MADE_WHEELS=1
  cp -al "$CACHE/wheels" "$ROOT/wheels" 2>/dev/null || cp -r "$CACHE/wheels" "$ROOT/wheels"
}

build_image() { # TAG NETWORK [BUILD-ARG...]
  local tag=$1 network=$2
  shift 2
  local args=(--pull=never --network "$network" --format docker --build-arg "BASE_IMAGE=$BASE_IMAGE")
  for arg in "$@"; do args+=(--build-arg "$arg"); done
  IMAGES+=("$tag")
  podman build --quiet "${args[@]}" -t "$tag" "$ROOT" >"$WORK/build.log" 2>&1 || {
    tail -40 "$WORK/build.log"
    fail "podman build"
  }
}

free_port() { "$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }

start_container() { # NAME IMAGE PORT
  CONTAINERS+=("$1")
  # podman schedules HEALTHCHECKs with systemd (none here): run without, and run the image's check by hand below.
  podman run -d --name "$1" --network host --no-healthcheck -e PORT="$3" "$2" >/dev/null
  local deadline=$((SECONDS + 180))
  until curl -fsS "http://127.0.0.1:$3/health" -o "$WORK/health.json" 2>/dev/null; do
    [[ $(podman inspect -f '{{.State.Running}}' "$1") == true ]] || fail "container $1 exited"
    ((SECONDS < deadline)) || fail "/health did not answer within 180 s"
    sleep 1
  done
}

stop_container() { # NAME
  podman rm -f -t 2 "$1" >/dev/null
  CONTAINERS=("${CONTAINERS[@]/$1/}")
}

check_service() { # NAME PORT EXPECTED_MODEL_ID EXPECTED_REVISION EXPECTED_SHA256
  local name=$1 url=http://127.0.0.1:$2
  local code
  code=$(curl -sS -o "$WORK/health.json" -w '%{http_code}' "$url/health")
  [[ $code == 200 ]] || fail "/health answered $code"
  curl -fsS "$url/v1/model" -o "$WORK/model.json" || fail "/v1/model"
  "$PY" - "$WORK/health.json" "$WORK/model.json" "$3" "$4" "$5" <<'EOF' || fail "/health or /v1/model content"
import json, sys
health, model = (json.load(open(p)) for p in sys.argv[1:3])
model_id, revision, sha256 = sys.argv[3:6]
assert health["status"] == "ok" and health["model_loaded"] is True, health
assert health["model"]["id"].endswith(model_id) and health["model"]["revision"] == revision, health
assert model["sha256"] == sha256 and model["revision"] == revision, {k: model.get(k) for k in ("revision", "sha256")}
print(f"  /health ok, model {health['model']}, sha256 {model['sha256'][:16]}...")
EOF

  code=$(curl -sS -o "$WORK/mask.nii.gz" -D "$WORK/predict.headers" -w '%{http_code}' \
    -F "file=@$EXAMPLE;type=application/gzip" "$url/v1/predict?return_binary=true")
  [[ $code == 200 ]] || { cat "$WORK/mask.nii.gz"; fail "/v1/predict answered $code"; }
  grep -qi '^content-type: application/gzip' "$WORK/predict.headers" || fail "/v1/predict content type"
  "$PY" - "$EXAMPLE" "$WORK/mask.nii.gz" <<'EOF' || fail "mask geometry"
import sys
import nibabel as nib
import numpy as np
image, mask = nib.load(sys.argv[1]), nib.load(sys.argv[2])
assert mask.shape == image.shape, (mask.shape, image.shape)
assert np.allclose(mask.affine, image.affine), (mask.affine, image.affine)
assert mask.get_data_dtype() == np.uint8, mask.get_data_dtype()
labels = np.unique(np.asanyarray(mask.dataobj))
assert set(labels.tolist()) <= {0, 1, 2} and len(labels) > 1, labels
print(f"  /v1/predict mask {mask.shape} uint8, labels {labels.tolist()}, affine equal to the input's")
EOF

  code=$(curl -sS -o "$WORK/ui.html" -w '%{http_code}' "$url/ui/")
  if [[ $code != 200 ]] || ! grep -qi gradio "$WORK/ui.html"; then fail "/ui/ answered $code"; fi
  echo "  /ui/ 200 ($(wc -c <"$WORK/ui.html") bytes)"
  code=$(curl -sS -o "$WORK/niivue.js" -w '%{http_code}' "$url/ui/viewer-assets/niivue.umd.js")
  [[ $code == 200 ]] || fail "the viewer's NiiVue: /ui/viewer-assets/niivue.umd.js answered $code"
  tar -xzOf "$ROOT"/wheels/niivue-niivue-*.tgz package/dist/niivue.umd.js | cmp -s - "$WORK/niivue.js" ||
    fail "the image serves another NiiVue than the pinned tarball's"
  echo "  /ui/viewer-assets/niivue.umd.js 200, the pinned NiiVue"

  local uids
  podman top "$name" user huser pid args | sed 's/^/  top: /'
  ! podman top "$name" user huser | tail -n +2 | grep -qwE 'root|0' || fail "a process runs as root"
  # real, effective, saved and filesystem uid of every process in the container (this `sh` included)
  uids=$(podman exec "$name" sh -c 'cat /proc/[0-9]*/status' | awk '/^Uid:/ { print $2, $3, $4, $5 }' |
    tr ' ' '\n' | sort -u)
  [[ $uids == 1000 ]] || fail "processes run with uids: ${uids//$'\n'/ }"
  podman exec "$name" sh -c 'test -w "$HOME" && test -w "$HF_HOME" && test -w "$GRADIO_TEMP_DIR" &&
    test "$HF_HUB_OFFLINE" = 1 && test "$HF_HUB_DISABLE_TELEMETRY" = 1 && test "$GRADIO_ANALYTICS_ENABLED" = False' \
    || fail "HOME/HF_HOME/GRADIO_TEMP_DIR writable, offline and telemetry-off environment"
  local image healthcheck
  image=$(podman inspect -f '{{.Image}}' "$name")
  mapfile -t healthcheck < <(podman image inspect -f '{{json .Config.Healthcheck.Test}}' "$image" |
    "$PY" -c 'import json, sys; test = json.load(sys.stdin); assert test[0] == "CMD", test; print("\n".join(test[1:]))')
  podman exec "$name" "${healthcheck[@]}" || fail "the image's HEALTHCHECK command"
  echo "  uid 1000 only; HOME, HF_HOME, GRADIO_TEMP_DIR writable; HEALTHCHECK healthy"
}

check_image() { # IMAGE
  local user port contents
  user=$(podman image inspect -f '{{.Config.User}}' "$1")
  port=$(podman image inspect -f '{{range $p, $v := .Config.ExposedPorts}}{{$p}} {{end}}' "$1")
  [[ $user == 1000 && $port == "8000/tcp " ]] || fail "image user '$user', exposed '$port'"
  contents=$(podman run --rm --network none --no-healthcheck "$1" \
    sh -c 'ls -A /home/user/app; find /home/user/app -name __pycache__')
  [[ $(echo "$contents" | sort | tr '\n' ' ') == "api model.yaml models pyproject.toml requirements.txt unet3d " ]] \
    || fail "unexpected files in /home/user/app: $contents"
  echo "  image: USER 1000, EXPOSE 8000/tcp, /home/user/app = $(echo "$contents" | tr '\n' ' ')"
}

start_fake_hub() { # serves the shipped model as acme/unet3d-brain-tissue; prints "URL SHA"
  PYTHONPATH=$ROOT/tests "$PY" - "$ROOT/models/unet3d-brain-tissue" "$WORK/hub.txt" <<'EOF' &
import signal, sys, threading
from pathlib import Path
from hubserver import FakeHub, model_files
hub = FakeHub().start()
sha = hub.add_commit("acme/unet3d-brain-tissue", model_files(Path(sys.argv[1])))
Path(sys.argv[2]).write_text(f"{hub.url} {sha}\n")
signal.signal(signal.SIGTERM, lambda *_: (hub.stop(), sys.exit(0)))
threading.Event().wait()
EOF
  HUB_PID=$!
  for _ in $(seq 100); do [[ -s $WORK/hub.txt ]] && return; sleep 0.1; done
  fail "fake hub did not start"
}

install_podman
configure_engine
choose_base
prepare_wheelhouse
SHA256=$(sha256sum models/unet3d-brain-tissue/model.safetensors | cut -d' ' -f1)

step "podman build (base $BASE_IMAGE), without any network: everything comes from the wheelhouse"
build_image "$IMAGE" none
step "built $IMAGE ($(podman image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"
check_image "$IMAGE"
PORT=$(free_port)
step "podman run on 127.0.0.1:$PORT"
start_container "unet3d-smoke-$RUN_ID" "$IMAGE" "$PORT"
step "/health answered"
check_service "unet3d-smoke-$RUN_ID" "$PORT" "unet3d-brain-tissue" "local" "$SHA256"
stop_container "unet3d-smoke-$RUN_ID"

if [[ ${UNET3D_SMOKE_HUB:-1} != 0 ]]; then
  start_fake_hub
  read -r HUB_URL HUB_SHA <"$WORK/hub.txt"
  step "podman build baking acme/unet3d-brain-tissue@${HUB_SHA:0:12} from the loopback Hub $HUB_URL"
  build_image "$HUB_IMAGE" host "UNET3D_MODEL=acme/unet3d-brain-tissue" "UNET3D_MODEL_REVISION=$HUB_SHA" \
    "HF_ENDPOINT=$HUB_URL"
  kill "$HUB_PID"
  wait "$HUB_PID" 2>/dev/null || true
  HUB_PID=""
  step "Hub stopped; podman run the baked image (HF_HUB_OFFLINE=1)"
  PORT=$(free_port)
  start_container "unet3d-smoke-hub-$RUN_ID" "$HUB_IMAGE" "$PORT"
  check_service "unet3d-smoke-hub-$RUN_ID" "$PORT" "acme/unet3d-brain-tissue" "$HUB_SHA" "$SHA256"
fi
step "container smoke passed"
