#!/usr/bin/env bash
# The device side on a real ARM instruction stream, without a board: a Debian bookworm root under
# qemu user emulation, then selftest / predict (/ bench) of a bundle made on this workstation.
#
#   usage: tools/board_check.sh arm64|armhf BUNDLE.tar.gz [KEY.pub]
#          (make arm64-check / make armhf-check [KEY=...]; needs root)
#
#   arm64  64-bit Raspberry Pi OS: the `edge` extra from aarch64 wheels (LiteRT, ONNX Runtime).
#   armhf  32-bit Raspberry Pi OS: no LiteRT, ONNX Runtime or numpy wheel exists for armv7, so numpy,
#          Pillow and cryptography come from Debian's python3-* packages and edgefashion runs on its
#          own numpy backend, with no interpreter at all.
#
# With KEY.pub (the bundle signed by its private key), selftest runs with --trust KEY.pub, and a copy
# whose manifest was changed after signing must be refused.
#
# The root (and the wheels) are cached under .cache/ARCH (EDGEFASHION_BOARD_CACHE) and reused.
# Exit 0 only when selftest passes inside the emulated machine.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ARCH=${1:-}
BUNDLE=${2:-}
PUBKEY=${3:-}
case "$ARCH" in
  arm64) QEMU=qemu-aarch64; INCLUDE=python3,python3-venv ;;
  armhf) QEMU=qemu-arm; INCLUDE=python3,python3-venv,python3-numpy,python3-pil,python3-cryptography,python3-cffi-backend,python3-threadpoolctl ;;
  *) echo "usage: tools/board_check.sh arm64|armhf BUNDLE.tar.gz [KEY.pub]" >&2; exit 2 ;;
esac
CACHE=${EDGEFASHION_BOARD_CACHE:-$ROOT/.cache/$ARCH}
CHROOT=$CACHE/bookworm-$ARCH
WHEELS=$CACHE/wheels
HOST_PY=${HOST_PY:-$ROOT/.venv/bin/python}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PLATFORMS=(--platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux2014_aarch64)

die() { echo "$ARCH-check: $*" >&2; exit 2; }
say() { echo "== $*"; }

[ -n "$BUNDLE" ] || die "usage: tools/board_check.sh $ARCH BUNDLE.tar.gz (make demo writes runs/demo/edgefashion-bundle.tar.gz)"
[ -f "$BUNDLE" ] || die "$BUNDLE: bundle not found (run make demo first)"
BUNDLE=$(cd "$(dirname "$BUNDLE")" && pwd)/$(basename "$BUNDLE")
[ "$(id -u)" = 0 ] || die "needs root for debootstrap, binfmt and chroot: run it with sudo"
[ -x "$HOST_PY" ] || die "$HOST_PY not found: run make setup first (or set HOST_PY)"
mkdir -p "$CACHE"
avail_kb=$(df --output=avail -k "$CACHE" | tail -1)
[ ! -f "$CHROOT/.complete" ] && [ "$avail_kb" -lt 2000000 ] && die "needs ~2 GB free under $CACHE, have $((avail_kb / 1024)) MB"

started=$(date +%s)

# 1. qemu + binfmt on the host
if ! command -v debootstrap >/dev/null || [ ! -e /usr/bin/$QEMU-static ] || ! command -v update-binfmts >/dev/null; then
  say "installing qemu-user-static binfmt-support debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static binfmt-support debootstrap >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static binfmt-support debootstrap >/dev/null; } \
    || die "could not install qemu-user-static binfmt-support debootstrap with apt-get"
fi
if [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || die "cannot mount binfmt_misc (no privilege for it in this container?)"
fi
update-binfmts --enable $QEMU >/dev/null 2>&1 || true
grep -q '^enabled' /proc/sys/fs/binfmt_misc/$QEMU 2>/dev/null \
  || die "binfmt entry $QEMU is not enabled (update-binfmts --enable $QEMU failed)"

# 2. the root, made once
if [ ! -f "$CHROOT/.complete" ]; then
  say "debootstrap $ARCH bookworm into $CHROOT (first run only, several minutes)"
  rm -rf "$CHROOT"
  debootstrap --arch=$ARCH --variant=minbase --include=$INCLUDE bookworm "$CHROOT" "$MIRROR" \
    > "$CACHE/debootstrap.log" 2>&1 || die "debootstrap failed, see $CACHE/debootstrap.log"
  touch "$CHROOT/.complete"
else
  say "reusing $CHROOT"
fi

# 3. wheels, downloaded on the host (pip inside cannot verify this network's certificates): for arm64
#    the edge extra's aarch64 wheels; for armhf only edgefashion's own (pure Python) wheel
mkdir -p "$WHEELS"
if [ "$ARCH" = arm64 ]; then
  say "aarch64 wheels into $WHEELS"
  pins=$("$HOST_PY" - <<'PY'
import importlib.metadata as md
print(" ".join(f"{d}=={md.version(d)}" for d in ("numpy", "ai-edge-litert", "onnxruntime", "pillow", "cryptography",
                                                  "threadpoolctl")))
PY
)
  # shellcheck disable=SC2086
  "$HOST_PY" -m pip download -q --only-binary=:all: "${PLATFORMS[@]}" --python-version 3.11 --implementation cp \
    -d "$WHEELS" $pins || die "pip download of aarch64 wheels failed ($pins)"
fi
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
chroot "$CHROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root EDGEFASHION_EMULATED=$QEMU ARCH=$ARCH /bin/bash -s <<'INSIDE'
set -u
cd /opt/ef
echo "== inside: uname -m = $(uname -m), $(python3 --version), $(. /etc/os-release; echo "$PRETTY_NAME")"
if [ "$ARCH" = armhf ]; then  # Debian's numpy, Pillow and cryptography; no interpreter at all
  [ -x venv/bin/python ] || python3 -m venv --system-site-packages venv
  venv/bin/pip install -q --no-index --find-links wheels --force-reinstall --no-deps edgefashion || exit 3
else
  [ -x venv/bin/python ] || python3 -m venv venv
  # this wheel first, so its extra's requirements (not those of an older install) are the ones resolved
  venv/bin/pip install -q --no-index --find-links wheels --force-reinstall --no-deps edgefashion || exit 3
  venv/bin/pip install -q --no-index --find-links wheels 'edgefashion[edge]' || exit 3
fi
echo "== installed: $(venv/bin/python -c 'import importlib.metadata as md
names = ("edgefashion", "numpy", "ai-edge-litert", "tflite-runtime", "onnxruntime", "pillow", "cryptography")
found = []
for n in names:
    try: found.append(f"{n}=={md.version(n)}")
    except md.PackageNotFoundError: pass
print(" ".join(found))')"
venv/bin/python -c "import tensorflow" 2>/dev/null && echo "tensorflow present (unexpected)" || echo "== tensorflow: not installed (as on a device)"
venv/bin/python -c "import ai_edge_litert" 2>/dev/null || echo "== no TFLite interpreter installed: the numpy backend runs the int8 and float .tflite models"
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
say "wall time $(( $(date +%s) - started )) s; selftest inside $ARCH exit $rc"
exit $rc
