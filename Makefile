# Two commands do everything on a fresh Debian/Ubuntu machine:
#   make demo   set up, fetch the real Fashion-MNIST, run train -> export -> verify -> bench -> bundle
#   make test   set up, fetch the data, run both test tiers
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
EDGE   ?= .venv-edge
RUN    ?= runs/demo

.PHONY: demo test lint test-device test-device-isa test-host test-fleet setup data qemu sshd postgres chromium isa-check arm64-check armhf-check fleet-arm64-check firmware fixtures clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { echo "python3-venv is missing: apt-get install python3-venv"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[host,edge,dev,fleet,postgres]'
	touch $@

# The device side alone: numpy, LiteRT, ONNX Runtime, Pillow. No TensorFlow.
$(EDGE)/.installed: pyproject.toml
	$(PYTHON) -m venv $(EDGE)
	$(EDGE)/bin/pip install -q --upgrade pip
	$(EDGE)/bin/pip install -q -e '.[edge,dev]'
	touch $@

setup: $(VENV)/.installed

data: setup
	$(BIN)/python tools/get_data.py

demo: data
	$(BIN)/edgefashion run --out $(RUN)

test: lint test-device test-host test-fleet

# pyflakes over the code, tests, tools and benchmarks: unused imports and undefined names (seconds)
lint: $(EDGE)/.installed
	$(EDGE)/bin/python -m pyflakes edgefashion tests tools benchmarks

# The TensorFlow-free tier, as a device runs: the edge extra only, on committed fixtures (seconds).
test-device: $(EDGE)/.installed data
	@$(EDGE)/bin/python -c "import importlib.util as u, sys; sys.exit('tensorflow in the edge venv' if u.find_spec('tensorflow') else 0)"
	$(EDGE)/bin/python -m pytest -q tests/device

# The device tier again on the other x86 int8 kernel paths, under qemu: AVX2 without VNNI, SSE4.2 (minutes).
test-device-isa: $(EDGE)/.installed data qemu
	for cpu in Haswell Nehalem; do \
	  EDGEFASHION_TEST_CPU=$$cpu qemu-x86_64-static -cpu $$cpu $(EDGE)/bin/python -m pytest -q -p no:cacheprovider tests/device || exit 1; \
	done

# The host tier: trains and exports tiny real models, the x86 kernel paths under qemu (minutes).
test-host: $(EDGE)/.installed data qemu postgres chromium
	$(BIN)/python -m pytest -q tests/host

# fleet against Debian's OpenSSH server on 127.0.0.1 (the edge venv is a device); the arm64 device too
# where its root was built (make fleet-arm64-check). About 2 minutes.
test-fleet: $(EDGE)/.installed setup sshd chromium
	$(BIN)/python -m pytest -q tests/fleet

# The fleet tests with the emulated arm64 device required: builds the arm64 Debian root first (about 8
# minutes the first time, cached in .cache/arm64), then about 3 minutes. Needs root.
fleet-arm64-check: setup sshd
	bash tools/board_check.sh arm64 tests/fixtures/tiny-bundle.tar.gz
	EDGEFASHION_FLEET_ARM64=1 $(BIN)/python -m pytest -q tests/fleet

# Debian's PostgreSQL server, which the tune test starts in a folder of its own (tune --storage postgresql://)
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && SUDO= || SUDO="sudo -n"; \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q postgresql >/dev/null || \
	    { $$SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q postgresql >/dev/null; } || \
	    { echo "postgresql is missing and could not be installed: apt-get install postgresql"; exit 2; }; }

# Debian's headless Chromium: the report tests open report.html in it (tests/chromium.py)
chromium:
	@command -v chromium >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && SUDO= || SUDO="sudo -n"; \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null || \
	    { $$SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null; } || \
	    { echo "chromium is missing and could not be installed: apt-get install chromium"; exit 2; }; }

sshd:
	@[ -x /usr/sbin/sshd ] || \
	  { [ "$$(id -u)" = 0 ] && SUDO= || SUDO="sudo -n"; \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q openssh-server >/dev/null || \
	    { $$SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q openssh-server >/dev/null; } || \
	    { echo "openssh-server is missing and could not be installed: apt-get install openssh-server"; exit 2; }; }

# qemu user emulation: the other x86 int8 kernel paths (isa-check, and its small version in make test)
qemu:
	@command -v qemu-x86_64-static >/dev/null || command -v qemu-x86_64 >/dev/null || [ "$$(uname -m)" != x86_64 ] || \
	  { [ "$$(id -u)" = 0 ] && SUDO= || SUDO="sudo -n"; \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q qemu-user-static >/dev/null || \
	    { $$SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q qemu-user-static >/dev/null; } || \
	    { echo "qemu-user-static is missing and could not be installed: apt-get install qemu-user-static"; exit 2; }; }

# The run's int8 and float models, and selftest of its bundles, on the x86 kernel paths that matter
# (AVX2 without VNNI, SSE4.2) under qemu: per path accuracy, agreement, golden differences. Minutes.
isa-check: setup qemu
	$(BIN)/python tools/isa_check.py $(RUN)

# Regenerate firmware_assets/ from a finished run (make demo first): its TFLM check, then the copy.
firmware: setup
	[ -f $(RUN)/firmware/firmware.json ] || $(BIN)/edgefashion firmware $(RUN)
	$(BIN)/python tools/make_firmware_assets.py --run $(RUN)

# The device side on an emulated arm64 Debian (minutes; needs root). Not part of `make test`.
arm64-check: setup
	bash tools/board_check.sh arm64 $(RUN)/edgefashion-bundle.tar.gz $(KEY)

# 32-bit Raspberry Pi OS: an emulated armhf Debian with Debian's numpy and no interpreter at all.
armhf-check: setup
	bash tools/board_check.sh armhf $(RUN)/edgefashion-bundle.tar.gz $(KEY)

# Regenerate tests/fixtures/ (the device tier's tiny run, bundle and test images).
fixtures: data
	$(BIN)/python tools/make_test_fixtures.py

clean:
	rm -rf $(VENV) $(EDGE) .pytest_cache build *.egg-info
