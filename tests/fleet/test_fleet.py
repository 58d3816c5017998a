"""edgefashion fleet against Debian's OpenSSH server on 127.0.0.1 (started here, with keys made here).

Devices: `native` (the edge venv: no TensorFlow), `bare` (a venv with numpy, Pillow and cryptography
only, edgefashion put there by `fleet deploy --install`: no interpreter, the numpy backend runs it),
`arm64` (the arm64 Debian of `make arm64-check` under qemu-user, through sshd's ChrootDirectory; only
where that root was built: `make fleet-arm64-check` builds it and requires it), and the faults: an
unreachable port, a refused key, a changed host key, a full disk, a command that hangs.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

import sshd
from chromium import check_report
from helpers import cli

ROOT = Path(__file__).resolve().parents[2]
EDGE = ROOT / ".venv-edge" / "bin" / "edgefashion"
ARM64_ROOT = Path(os.environ.get("EDGEFASHION_BOARD_CACHE", ROOT / ".cache" / "arm64")) / "bookworm-arm64"
ARM64_VENV = ARM64_ROOT / "opt" / "ef" / "venv"
NEED_ARM64 = os.environ.get("EDGEFASHION_FLEET_ARM64") == "1"
HAVE_ARM64 = (ARM64_VENV / "bin" / "edgefashion").exists() and os.geteuid() == 0

pytestmark = pytest.mark.skipif(not Path(sshd.SSHD).exists(), reason="openssh-server is not installed (make sshd)")


def fleet(*args, timeout=900, check_rc=None):
    done = subprocess.run([sys.executable, "-m", "edgefashion", "fleet", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    if check_rc is not None:
        assert done.returncode == check_rc, done.stdout + done.stderr
    return done


def device_lines(done) -> dict[str, str]:
    """{device: its line} from what fleet printed."""
    out = {}
    for line in (done.stdout + done.stderr).splitlines():
        name, sep, rest = line.partition(": ")
        if sep and rest.startswith(("OK", "FAILED", "kept")):
            out[name] = rest
    return out


def device_entry(name, port, identity, edgefashion, folder, extra=""):
    return (f'[devices.{name}]\nhost = "127.0.0.1"\nport = {port}\nuser = "{os.environ.get("USER", "root")}"\n'
            f'identity = "{identity}"\nedgefashion = "{edgefashion}"\ndir = "{folder}"\n{extra}\n')


def tampered(bundle: Path, out: Path) -> Path:
    """The same bundle with one byte of its signed manifest changed: hashes agree, the signature not."""
    with tarfile.open(bundle) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    files["manifest.json"] = files["manifest.json"].replace(b'"count": ', b'"count": 1', 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Servers, keys, a signed bundle, a wheel and the inventory; everything stopped and removed after."""
    tmp = tmp_path_factory.mktemp("fleet")
    user_key = sshd.keygen(tmp / "id_fleet")
    other_key = sshd.keygen(tmp / "id_other")
    subprocess.run([str(EDGE), "keygen", str(tmp / "release.key")], check=True, capture_output=True)
    bundle = tmp / "bundles" / "demo.tar.gz"
    subprocess.run([str(EDGE), "bundle", str(ROOT / "tests/fixtures/run"), "--out", str(bundle), "--sign",
                    str(tmp / "release.key")], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp / "wheels"), str(ROOT)], check=True, capture_output=True)
    wheel = next((tmp / "wheels").glob("edgefashion-*.whl"))
    # a device with numpy, Pillow and cryptography but no interpreter (as Debian's armhf packages give)
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "bare-venv")], check=True)
    subprocess.run([str(tmp / "bare-venv/bin/pip"), "install", "-q", "numpy", "pillow", "cryptography"], check=True)
    servers = [sshd.Sshd(tmp / "sshd-native", user_key.with_suffix(".pub")),
               sshd.Sshd(tmp / "sshd-replaced", user_key.with_suffix(".pub"))]
    known = servers[0].known_hosts_line()
    wrong = sshd.keygen(tmp / "not_the_host_key").with_suffix(".pub").read_text().split()[:2]
    known += f"[127.0.0.1]:{servers[1].port} {' '.join(wrong)}\n"  # as if the device had been replaced
    port = servers[0].port
    trust = f'trust = ["{tmp / "release.pub"}"]'
    (tmp / "slow").write_text("#!/bin/sh\nsleep 60\n")
    (tmp / "slow").chmod(0o755)
    tiny = tmp / "tiny-disk"
    tiny.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(tiny)]).returncode == 0
    inventory = ('known_hosts = "known_hosts"\n\n'
                 + device_entry("native", port, user_key, EDGE, tmp / "dev-native", extra=trust + '\ntags = ["x86"]')
                 + device_entry("bare", port, user_key, tmp / "bare-venv/bin/edgefashion", tmp / "dev-bare",
                                extra=trust + '\ntags = ["x86"]')
                 + device_entry("gone", sshd.free_port(), user_key, EDGE, tmp / "dev-gone")
                 + device_entry("wrongkey", port, other_key, EDGE, tmp / "dev-wrongkey")
                 + device_entry("replaced", servers[1].port, user_key, EDGE, tmp / "dev-replaced")
                 + device_entry("slow", port, user_key, tmp / "slow", tmp / "dev-slow"))
    if mounted:
        inventory += device_entry("full", port, user_key, EDGE, tiny / "dev", extra=trust)
    arm64_key = ARM64_ROOT / "root/.config/edgefashion/trusted-keys/fleet-test.pub"
    if HAVE_ARM64:
        servers.append(sshd.Sshd(tmp / "sshd-arm64", user_key.with_suffix(".pub"), chroot=ARM64_ROOT,
                                 env={"EDGEFASHION_EMULATED": "qemu-aarch64"}))
        known += servers[-1].known_hosts_line()
        arm64_key.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp / "release.pub", arm64_key)  # the device's own trusted keys
        inventory += device_entry("arm64", servers[-1].port, user_key, "/opt/ef/venv/bin/edgefashion",
                                  "/root/fleet-test", extra='tags = ["arm"]')
    (tmp / "known_hosts").write_text(known)
    (tmp / "fleet.toml").write_text(inventory)
    try:
        yield {"tmp": tmp, "inventory": tmp / "fleet.toml", "bundle": bundle, "wheel": wheel, "full": mounted}
    finally:
        for server in servers:
            server.stop()
        if mounted:
            subprocess.run(["umount", str(tiny)])
        if HAVE_ARM64:
            arm64_key.unlink(missing_ok=True)
            shutil.rmtree(ARM64_ROOT / "root/fleet-test", ignore_errors=True)


def live(lab) -> list[str]:
    return ["native", "bare"] + (["arm64"] if HAVE_ARM64 else [])


def only(*names):
    return [a for n in names for a in ("--device", n)]


def test_arm64_device_present_when_required():
    if NEED_ARM64:
        assert HAVE_ARM64, f"{ARM64_VENV}: the arm64 root was not built (make arm64-check)"


def test_check_reports_each_device_and_each_fault(lab):
    done = fleet("check", "--inventory", lab["inventory"], "--timeout", 20, check_rc=1)
    lines = device_lines(done)
    assert lines["native"].startswith("OK") and "x86_64" in lines["native"] and "onnxruntime" in lines["native"]
    assert lines["gone"].startswith("FAILED") and "unreachable" in lines["gone"] and "connection refused" in lines["gone"]
    assert "authentication refused" in lines["wrongkey"] and "id_other" in lines["wrongkey"]
    assert "HOST KEY CHANGED" in lines["replaced"]
    assert "timed out after 20 s" in lines["slow"]
    assert "edgefashion not found" in lines["bare"] and "--install" in lines["bare"]  # before it is installed
    if HAVE_ARM64:
        assert lines["arm64"].startswith("OK") and "aarch64" in lines["arm64"] and "EMULATED" in lines["arm64"]
    assert "skew" in done.stdout and "free MB" in done.stdout


def test_unknown_host_key_is_refused_not_accepted(lab):
    empty = lab["tmp"] / "empty_known_hosts"
    empty.write_text("")
    inventory = lab["tmp"] / "unknown.toml"
    inventory.write_text(lab["inventory"].read_text().replace('known_hosts = "known_hosts"',
                                                             f'known_hosts = "{empty}"'))
    done = fleet("check", "--inventory", inventory, *only("native"), check_rc=1)
    assert "is not in" in device_lines(done)["native"] and "refused" in device_lines(done)["native"]
    assert empty.read_text() == ""  # never added silently


def test_deploy_twice_then_tampered(lab):
    inv, bundle = lab["inventory"], lab["bundle"]
    devices = only(*live(lab), "gone", "wrongkey") + (only("full") if lab["full"] else [])
    installed = fleet("deploy", bundle, "--inventory", inv, "--install", lab["wheel"], "--extras", "",
                      *only("bare"), check_rc=0)
    assert "installed edgefashion" in installed.stdout and "numpy backend" in installed.stdout
    assert "onnxruntime" not in device_lines(installed)["bare"]  # no interpreter: the numpy backend ran it
    done = fleet("deploy", bundle, "--inventory", inv, *devices, check_rc=1)
    lines = device_lines(done)
    assert "already holds demo.tar.gz" in lines["bare"]  # deployed with --install just before
    for name in set(live(lab)) - {"bare"}:
        assert lines[name].startswith("OK") and "selftest" in lines[name] and " 0 failed" in lines[name], lines[name]
    assert "unreachable" in lines["gone"] and "authentication refused" in lines["wrongkey"]
    if lab["full"]:
        assert "disk full" in lines["full"] and not list((lab["tmp"] / "tiny-disk").rglob("demo.tar.gz"))
    native = lab["tmp"] / "dev-native"
    assert (native / "demo.tar.gz").read_bytes() == bundle.read_bytes()
    assert json.loads((native / "deployed.json").read_text())["selftest_passed"] is True
    again = fleet("deploy", bundle, "--inventory", inv, *only(*live(lab)), check_rc=0)
    assert all("already holds demo.tar.gz" in device_lines(again)[n] for n in live(lab)), again.stdout
    # the same name, a manifest changed after signing: every device refuses it and keeps the good one
    bad = tampered(bundle, lab["tmp"] / "bad" / "demo.tar.gz")
    refused = fleet("deploy", bad, "--inventory", inv, *only(*live(lab)), check_rc=1)
    for name in live(lab):
        assert "does not match manifest.json" in device_lines(refused)[name], refused.stderr
    assert (native / "demo.tar.gz").read_bytes() == bundle.read_bytes()
    assert not list(native.rglob("*.part")) and not list((native / "incoming").iterdir())


def test_bench_compares_devices_and_reruns_only_failed(lab):
    out = lab["tmp"] / "fleet-bench"
    devices = only(*live(lab), "gone")
    done = fleet("bench", lab["bundle"], "--inventory", lab["inventory"], "--out", out, *devices,
                 "--runs", 20, "--warmup", 2, "--min-time", 0, check_rc=1)
    lines = device_lines(done)
    for name in live(lab):
        assert lines[name].startswith("OK") and (out / name / "bench.json").is_file()
    assert "unreachable" in lines["gone"]
    report = json.loads((out / "fleet.json").read_text())
    assert {d["device"]: d["ok"] for d in report["devices"]} == {**{n: True for n in live(lab)}, "gone": False}
    assert report["comparison"] and (out / "compare.png").stat().st_size > 1000
    assert "tflite-int8" in done.stdout and "D1: native" in done.stdout
    assert f"report: {out / 'report.html'}" in done.stdout  # written at the end, as run and tune do
    shown = cli("report", out, check=0)  # and again by hand: its own file, replaced
    assert "self-contained" in shown.stdout
    found = check_report(out / "report.html", lab["tmp"] / "fleet.png", ["devices", "compare"])
    assert found["figures"] >= 1 + len(live(lab))  # side by side, and each device's latency
    if HAVE_ARM64:
        assert "EMULATED (qemu-aarch64)" in done.stdout
        bench = json.loads((out / "arm64" / "bench.json").read_text())
        assert bench["environment"]["machine"] == "aarch64" and bench["environment"]["emulated"]
    bare = json.loads((out / "bare" / "bench.json").read_text())
    assert {r["runtime"] for r in bare["results"]} == {"numpy"}
    before = (out / "native" / "bench.json").stat().st_mtime_ns
    rerun = fleet("bench", lab["bundle"], "--inventory", lab["inventory"], "--out", out, *devices,
                  "--runs", 20, "--warmup", 2, "--min-time", 0, check_rc=1)
    assert "native: kept from the last run" in rerun.stdout and "gone: FAILED" in rerun.stderr
    assert (out / "native" / "bench.json").stat().st_mtime_ns == before


def test_verify_on_devices(lab):
    out = lab["tmp"] / "fleet-verify"
    done = fleet("verify", lab["bundle"], "--inventory", lab["inventory"], "--out", out, "--tag", "x86", check_rc=0)
    for name in ("native", "bare"):
        report = json.loads((out / name / "verify.json").read_text())
        assert report["models"] and all(m["passed"] for m in report["models"])
    assert "V1: native" in done.stdout and "tflite-int8" in done.stdout


def test_ctrl_c_leaves_no_half_written_file(lab):
    folder = lab["tmp"] / "dev-native"
    shutil.rmtree(folder, ignore_errors=True)
    proc = subprocess.Popen([sys.executable, "-m", "edgefashion", "fleet", "deploy", str(lab["bundle"]),
                             "--inventory", str(lab["inventory"]), *only("native")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (folder / "incoming" / "demo.tar.gz").exists():
        time.sleep(0.02)  # interrupted while the device selftests the upload
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    time.sleep(1)
    leftovers = sorted(p.name for p in folder.rglob("*") if p.is_file())
    assert leftovers in ([], ["demo.tar.gz", "deployed.json"]), leftovers  # nothing, or the whole bundle
    if leftovers:
        assert (folder / "demo.tar.gz").read_bytes() == lab["bundle"].read_bytes()


def test_bad_inventory_is_one_line(lab):
    bad = lab["tmp"] / "bad.toml"
    bad.write_text('[devices.pi]\nhost = "h"\nuser = "pi"\nidentity = "k"\nedgefashion = "e"\ndir = "d"\nport = "22"\n')
    done = fleet("check", "--inventory", bad, check_rc=2)
    assert done.stderr.strip() == f"error: {bad}: devices.pi.port = '22': expected an integer"
    bad.write_text('[devices.pi]\nhost = "h"\n')
    assert "devices.pi: user is missing" in fleet("check", "--inventory", bad, check_rc=2).stderr
    bad.write_text('[devices\n')
    assert "not valid TOML" in fleet("check", "--inventory", bad, check_rc=2).stderr


def test_tune_measures_latency_on_a_device(lab):
    out = lab["tmp"] / "tune"
    done = subprocess.run([sys.executable, "-m", "edgefashion", "tune", "--out", str(out), "--trials", "1", "--limit",
                           "600", "--epochs", "1", "--measure-on", "native", "--inventory", str(lab["inventory"]),
                           "--latency-repeats", "2"], capture_output=True, text=True, timeout=900)
    assert done.returncode in (0, 1), done.stderr[-2000:]  # 1: a trial at chance level (one epoch on 600 rows)
    report = json.loads((out / "pareto.json").read_text())
    measured = [t for t in report["trials"] if t["state"] == "COMPLETE"] + [report["seed_cnn"]]
    assert all(t["measured_on"].startswith("device native (root@127.0.0.1:") for t in measured)
    assert all(t["latency_spread"] is not None and t["latency_us"] > 0 for t in measured)
    assert list((lab["tmp"] / "dev-native" / "models").glob("*.tflite"))  # the models were sent to the device
    bad = subprocess.run([sys.executable, "-m", "edgefashion", "tune", "--out", str(lab["tmp"] / "tune2"), "--trials",
                          "1", "--measure-on", "nosuch", "--inventory", str(lab["inventory"])],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no device 'nosuch'" in bad.stderr
