#!/usr/bin/env bash
# The device side on a real ARM64 instruction stream, without a board: an arm64 Debian bookworm root
# under qemu user emulation, the `edge` extra from aarch64 wheels, then selftest / predict / bench.
#
#   usage: tools/arm64_check.sh BUNDLE.tar.gz [KEY.pub]   (make arm64-check [KEY=...]; needs root)
#
# With KEY.pub (the bundle signed by its private key), selftest runs with --trust KEY.pub, and a copy
# whose manifest was changed after signing must be refused.
#
# The root and the wheels are cached under .cache/arm64 (EDGEFASHION_ARM64_CACHE) and reused.
# Exit 0 only when selftest passes inside the emulated machine.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=${1:-}
PUBKEY=${2:-}
CACHE=${EDGEFASHION_ARM64_CACHE:-$ROOT/.cache/arm64}
CHROOT=$CACHE/bookworm-arm64
WHEELS=$CACHE/wheels
HOST_PY=${HOST_PY:-$ROOT/.venv/bin/python}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PLATFORMS=(--platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux2014_aarch64)

die() { echo "arm64-check: $*" >&2; exit 2; }
say() { echo "== $*"; }

[ -n "$BUNDLE" ] || die "usage: tools/arm64_check.sh BUNDLE.tar.gz (make demo writes runs/demo/edgefashion-bundle.tar.gz)"
[ -f "$BUNDLE" ] || die "$BUNDLE: bundle not found (run make demo first)"
BUNDLE=$(cd "$(dirname "$BUNDLE")" && pwd)/$(basename "$BUNDLE")
[ "$(id -u)" = 0 ] || die "needs root for debootstrap, binfmt and chroot: run it with sudo"
[ -x "$HOST_PY" ] || die "$HOST_PY not found: run make setup first (or set HOST_PY)"
mkdir -p "$CACHE"
avail_kb=$(df --output=avail -k "$CACHE" | tail -1)
[ ! -f "$CHROOT/.complete" ] && [ "$avail_kb" -lt 2000000 ] && die "needs ~2 GB free under $CACHE, have $((avail_kb / 1024)) MB"

started=$(date +%s)

# 1. qemu + binfmt on the host
if ! command -v debootstrap >/dev/null || [ ! -e /usr/bin/qemu-aarch64-static ] || ! command -v update-binfmts >/dev/null; then
  say "installing qemu-user-static binfmt-support debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static binfmt-support debootstrap >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static binfmt-support debootstrap >/dev/null; } \
    || die "could not install qemu-user-static binfmt-support debootstrap with apt-get"
fi
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || die "cannot mount binfmt_misc (no privilege for it in this container?)"
fi
update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null \
  || die "binfmt entry qemu-aarch64 is not enabled (update-binfmts --enable qemu-aarch64 failed)"

# 2. the arm64 root, made once
if [ ! -f "$CHROOT/.complete" ]; then
  say "debootstrap arm64 bookworm into $CHROOT (first run only, several minutes)"
  rm -rf "$CHROOT"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv bookworm "$CHROOT" "$MIRROR" \
    > "$CACHE/debootstrap.log" 2>&1 || die "debootstrap failed, see $CACHE/debootstrap.log"
  touch "$CHROOT/.complete"
else
  say "reusing $CHROOT"
fi

# 3. aarch64 wheels, downloaded on the host (pip inside cannot verify this network's certificates)
say "aarch64 wheels into $WHEELS"
mkdir -p "$WHEELS"
pins=$("$HOST_PY" - <<'PY'
import importlib.metadata as md
print(" ".join(f"{d}=={md.version(d)}" for d in ("numpy", "ai-edge-litert", "onnxruntime", "pillow", "cryptography")))
PY
)
# shellcheck disable=SC2086
"$HOST_PY" -m pip download -q --only-binary=:all: "${PLATFORMS[@]}" --python-version 3.11 --implementation cp \
  -d "$WHEELS" $pins || die "pip download of aarch64 wheels failed ($pins)"
rm -f "$WHEELS"/edgefashion-*.whl
"$HOST_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" "$ROOT" >/dev/null 2>&1 \
  || "$HOST_PY" -m pip wheel -q --no-deps -w "$WHEELS" "$ROOT" >/dev/null || die "could not build the edgefashion wheel"

# 4. bundle and sample inputs into the root
mkdir -p "$CHROOT/opt/ef"
rm -rf "$CHROOT/opt/ef/wheels" && cp -r "$WHEELS" "$CHROOT/opt/ef/wheels"
cp "$BUNDLE" "$CHROOT/opt/ef/bundle.tar.gz"
rm -f "$CHROOT/opt/ef/trusted.pub" "$CHROOT/opt/ef/tampered.tar.gz"
if [ -n "$PUBKEY" ]; then
  [ -f "$PUBKEY" ] || die "$PUBKEY: public key not found"
  cp "$PUBKEY" "$CHROOT/opt/ef/trusted.pub"
  # the same bundle with one changed byte in its (signed) manifest: the hashes still agree, the signature not
  "$HOST_PY" - "$BUNDLE" "$CHROOT/opt/ef/tampered.tar.gz" <<'PY'
import io, sys, tarfile
with tarfile.open(sys.argv[1]) as tar:
    files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
files["manifest.json"] = files["manifest.json"].replace(b'"count": ', b'"count": 1', 1)
with tarfile.open(sys.argv[2], "w:gz") as tar:
    for name, blob in files.items():
        info = tarfile.TarInfo(name); info.size = len(blob); tar.addfile(info, io.BytesIO(blob))
PY
fi
"$HOST_PY" - "$CHROOT/opt/ef/sample.csv" <<'PY'
import sys
from edgefashion import data
test = data.load(None, "test").subset(slice(0, 8))
data.write_csv(test, sys.argv[1])
PY

# 5. run it inside: /proc mounted, /sys left out (XNNPACK crashed under qemu with /sys mounted)
mount -t proc proc "$CHROOT/proc" 2>/dev/null || true
trap 'umount "$CHROOT/proc" 2>/dev/null || true' EXIT
set +e
chroot "$CHROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root EDGEFASHION_EMULATED=qemu-aarch64 /bin/bash -s <<'INSIDE'
set -u
cd /opt/ef
echo "== inside: uname -m = $(uname -m), $(python3 --version), $(. /etc/os-release; echo "$PRETTY_NAME")"
[ -x venv/bin/python ] || python3 -m venv venv
# this wheel first, so its extra's requirements (not those of an older install) are the ones resolved
venv/bin/pip install -q --no-index --find-links wheels --force-reinstall --no-deps edgefashion || exit 3
venv/bin/pip install -q --no-index --find-links wheels 'edgefashion[edge]' || exit 3
echo "== installed: $(venv/bin/pip list --format=freeze 2>/dev/null | grep -iE '^(edgefashion|numpy|ai-edge-litert|onnxruntime|pillow|cryptography)=' | tr '\n' ' ')"
venv/bin/python -c "import tensorflow" 2>/dev/null && echo "tensorflow present (unexpected)" || echo "== tensorflow: not installed (as on a device)"
echo "== (\"Error in cpuinfo\" lines below are expected: /sys is left unmounted under emulation)"
if [ -f trusted.pub ]; then
  echo "== edgefashion selftest --trust trusted.pub"
  venv/bin/edgefashion selftest bundle.tar.gz --trust trusted.pub; rc=$?
  echo "== edgefashion selftest --trust trusted.pub, manifest changed after signing (must be refused)"
  venv/bin/edgefashion selftest tampered.tar.gz --trust trusted.pub && { echo "tampered bundle passed"; rc=4; }
else
  echo "== edgefashion selftest"
  venv/bin/edgefashion selftest bundle.tar.gz; rc=$?
fi
echo "== edgefashion predict (8 test images)"
venv/bin/edgefashion predict bundle.tar.gz sample.csv --limit 8
echo "== edgefashion bench (emulated: proves it runs, the latencies are not device numbers)"
venv/bin/edgefashion bench bundle.tar.gz --runs 20 --warmup 2 --min-time 0 --out /opt/ef/bench.json
exit $rc
INSIDE
rc=$?
set -e
say "wall time $(( $(date +%s) - started )) s; selftest inside arm64 exit $rc"
exit $rc
