#!/usr/bin/env bash
# Build both stages of the Dockerfile with podman, then appraise one item through the serve image.
#
#   make image-check                       # serves a tiny model trained with .venv
#   make image-check MODEL_DIR=path/model  # serves that exported model instead
#   bash scripts/image-check.sh [MODEL_DIR]
#
# Prints one line, "image-check ok: ..." (exit 0), or "image-check failed: ..." followed by the
# last lines of the build's or the container's log (exit 1).
#
# No Docker daemon is needed: podman builds and runs the images. Where python:3.11-slim can be
# neither found nor pulled (no registry), a stand-in is bootstrapped once from Debian's packages
# and stored under that name. Needs root the first time (apt-get, debootstrap).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
base=docker.io/library/python:3.11-slim
name=touchstone-image-check-$$
work=$(mktemp -d)
log=$work/step.log
: >"$log"

fail() {
  echo "image-check failed: $1"
  tail -n 25 "$log" | sed 's/^/  | /'
  exit 1
}
cleanup() {
  podman rm -f "$name" >/dev/null 2>&1 || true
  podman volume rm -f "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

need=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}"; } >"$log" 2>&1 \
    || fail "apt-get install ${need[*]}"
fi
# crun refuses hybrid cgroups and runc the default rlimits here: runc, and no default ulimits.
export CONTAINERS_CONF=$work/containers.conf
printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' >"$CONTAINERS_CONF"

if ! podman image exists "$base" && ! timeout 300 podman pull -q "$base" >"$log" 2>&1; then
  # What the Dockerfile needs of the base, python3.11 with venv and make, from the Debian mirror
  # and release this machine's apt uses. debootstrap does not resolve virtual packages:
  # python3-distutils is the one that provides python3.11-venv's python3.11-distutils.
  release=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  mirror=$(grep -h -m1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | head -1)
  [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  debootstrap --variant=minbase \
    --include=python3.11,python3.11-venv,python3-distutils,make,ca-certificates \
    "$release" "$work/rootfs" "$mirror" >"$log" 2>&1 \
    || fail "debootstrap of a stand-in for $base"
  tar -C "$work/rootfs" -c . | podman import --change "ENV LANG=C.UTF-8" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    - "$base" >"$log" 2>&1 || fail "podman import of the stand-in base"
  rm -rf "$work/rootfs"
fi

# The photos to appraise, and a tiny model to serve unless one is given.
photos=$work/photos
tools=.venv/bin/touchstone
[ -x "$tools" ] || fail "no $tools: run make install first"
$tools data synth --items 24 --size 96 --seed 3 --workers 1 --out "$photos" >"$log" 2>&1 \
  || fail "touchstone data synth"
model=${1:-}
if [ -z "$model" ]; then
  model=$work/model
  {
    $tools train --config configs/tiny-test.yaml --set tracking.enabled=false \
      --data "$photos/manifest.csv" --out "$work/run" \
      && $tools export --run "$work/run" --out "$model"
  } >"$log" 2>&1 || fail "training a tiny model to serve"
  # The image's user is not root, and mktemp's folder is private.
  chmod a+x "$work" && chmod -R a+rX "$model"
fi
model=$(cd "$model" && pwd) || fail "no model directory $model"

# pip inside the build reads the same local package folders as pip here (torch from disk, not
# a multi-GB download), mounted read-only at the same paths, and trusts the same certificates:
# a pip.conf mounted at /etc/pip.conf for the build alone. Only settings that name local files
# travel; without any, the build uses PyPI alone.
pip_setting() { # the value pip uses: PIP_* variables, then [install], then [global]
  .venv/bin/python -m pip config list 2>/dev/null | awk -F= -v key="$1" '
    { k = $1; sub(/^[^.]*\./, "", k); section = substr($1, 1, length($1) - length(k) - 1) }
    k == key { v = substr($0, length($1) + 2); gsub(/^'\''|'\''$/, "", v); gsub(/\\n/, " ", v); got[section] = v }
    END { if (":env:" in got) print got[":env:"]; else if ("install" in got) print got["install"]; else print got["global"] }'
}
mounts=() settings=()
for key in find-links index-url extra-index-url; do
  kept=()
  for value in $(pip_setting "$key"); do
    path=${value#file://}
    if [[ $value == *://* && $value != file://* ]] || [ ! -e "$path" ]; then continue; fi
    kept+=("$value")
    # An index's pages link to their files by relative paths, usually beside the index.
    [ "$key" = find-links ] || path=$(dirname "$path")
    mounts+=(-v "$path:$path:ro")
  done
  ((${#kept[@]} == 0)) || settings+=("$key = ${kept[*]}")
done
cert=$(pip_setting cert)
if [ -f "$cert" ]; then
  mounts+=(-v "$(dirname "$cert"):$(dirname "$cert"):ro")
  settings+=("cert = $cert")
fi
printf '[global]\n' >"$work/pip.conf"
((${#settings[@]} == 0)) || printf '%s\n' "${settings[@]}" >>"$work/pip.conf"
mounts+=(-v "$work/pip.conf:/etc/pip.conf:ro")

built=()
for stage in serve train; do
  since=$SECONDS
  old=$(podman image inspect -f '{{.Id}}' "localhost/touchstone:$stage" 2>/dev/null || true)
  # --format docker: an OCI image has no HEALTHCHECK.
  podman build --network host --format docker "${mounts[@]}" --target "$stage" \
    -t "localhost/touchstone:$stage" . >"$log" 2>&1 || fail "podman build --target $stage"
  new=$(podman image inspect -f '{{.Id}}' "localhost/touchstone:$stage")
  # Each code change makes new layers; the replaced image's would pile up, gigabytes a build.
  [ -z "$old" ] || [ "$old" = "$new" ] || podman rmi "$old" >/dev/null 2>&1 || true
  size=$(podman image inspect -f '{{.Size}}' "$new" | awk '{printf "%.2f GB", $1 / 1e9}')
  built+=("$stage ($size, $((SECONDS - since)) s)")
done
podman image prune -f >/dev/null 2>&1 || true

# The image as shipped (its command, port 8000 and HEALTHCHECK), published on a free port here.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
podman volume create "$name" >/dev/null
podman run -d --name "$name" -p "127.0.0.1:$port:8000" -v "$model:/models/current:ro" \
  -v "$name:/data" localhost/touchstone:serve >"$log" 2>&1 || fail "podman run"
url=http://127.0.0.1:$port
not_ready() { # the readiness answer, and the container's log without the probes
  { echo "/readyz: $(curl -s "$url/readyz")"; podman logs "$name" 2>&1 | grep -v '"GET /readyz '; } >"$log"
  fail "$1"
}
for _ in $(seq 1 90); do
  curl -sf "$url/readyz" >/dev/null && break
  [ "$(podman inspect -f '{{.State.Running}}' "$name")" = true ] \
    || not_ready "the serve container stopped before it was ready"
  sleep 1
done
curl -sf "$url/readyz" >/dev/null || not_ready "the serve container was not ready in 90 s"
podman healthcheck run "$name" >"$log" 2>&1 || fail "the image's HEALTHCHECK"

key=$(podman exec "$name" touchstone admin create-key --role member_backend --data-dir /data 2>"$log" | tail -n 1) \
  && [ -n "$key" ] || fail "touchstone admin create-key inside the container"

# The first item's photos, each a part named by its region.
columns='NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }'
read -r item category < <(awk -F, "$columns"' { print $col["item_id"], $col["category"]; exit }' \
  "$photos/manifest.csv")
parts=()
while read -r region image; do parts+=(-F "$region=@$photos/$image"); done < <(
  awk -F, -v item="$item" "$columns"' $col["item_id"] == item { print $col["region"], $col["image"] }' \
    "$photos/manifest.csv")
status=$(curl -s -o "$work/appraisal.json" -w '%{http_code}' -H "Authorization: Bearer $key" \
  -F member_id=image-check -F member_tier=explorer -F "category=$category" "${parts[@]}" \
  "$url/v1/appraisals") || true
if [ "$status" != 201 ]; then
  { echo "response: $(cat "$work/appraisal.json")"; podman logs "$name"; } >"$log" 2>&1
  fail "POST /v1/appraisals answered $status, not 201"
fi
echo "image-check ok: built ${built[0]} and ${built[1]}; the serve image appraised" \
  "item $item (201); $((SECONDS - started)) s in all"
