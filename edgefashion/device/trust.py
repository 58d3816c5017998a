"""Which bundles a device trusts: Ed25519 signatures over manifest.json, and pinned digests.

The workstation signs the exact bytes of manifest.json (`edgefashion bundle --sign KEY`); the manifest
lists the sha256 of every other file, so the signature covers the whole bundle. A device trusts the
public keys given with `--trust` and those in its config folder (TRUSTED_DIR). Where any key is
trusted, a bundle without a valid signature by one of them is refused; where none is, an unsigned
bundle still opens, with a warning. The bundle file's sha256 is reported either way, so it can be
pinned (`--pin`). The cryptography comes from the `cryptography` package, imported only here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..console import printable
from ..errors import InputError, MissingDependency
from ..files import sha256_file

SIGNATURE = "manifest.sig"
MAX_SIGNATURE_BYTES = 4096
KEY_SUFFIX = ".pub"


def config_dir() -> Path:
    """$EDGEFASHION_CONFIG, else $XDG_CONFIG_HOME/edgefashion, else ~/.config/edgefashion."""
    if os.environ.get("EDGEFASHION_CONFIG"):
        return Path(os.environ["EDGEFASHION_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "edgefashion"


def trusted_dir() -> Path:
    return config_dir() / "trusted-keys"


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise MissingDependency("cryptography (for signed bundles)", "edge") from None
    return ed25519, serialization, InvalidSignature, UnsupportedAlgorithm


def fingerprint(raw_public_key: bytes) -> str:
    """A short name for a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


def read_public_keys(path: Path) -> dict[str, bytes]:
    """{fingerprint: raw key} from an OpenSSH-style .pub file (one key a line) or a PEM public key."""
    ed25519, serialization, _, unsupported = _crypto()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: public key not found")
    text = path.read_bytes()[:65536]
    blocks = [text] if text.lstrip().startswith(b"-----BEGIN") else \
        [line for line in text.splitlines() if line.strip() and not line.startswith(b"#")]
    keys = {}
    for block in blocks:
        try:
            key = (serialization.load_pem_public_key(block) if block.startswith(b"-----")
                   else serialization.load_ssh_public_key(block.strip()))
        except (ValueError, TypeError, IndexError, unsupported) as exc:
            raise InputError(f"{path}: not an Ed25519 public key ({printable(str(exc)[:80])})") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise InputError(f"{path}: a {type(key).__name__}, expected an Ed25519 public key")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        keys[fingerprint(raw)] = raw
    if not keys:
        raise InputError(f"{path}: holds no public key")
    return keys


@dataclass
class Trust:
    """What this device accepts: public keys (by fingerprint) and optionally one pinned digest."""

    keys: dict[str, bytes] = field(default_factory=dict)
    pin: str | None = None

    @classmethod
    def load(cls, trust_files=(), pin: str | None = None) -> "Trust":
        """Keys from `trust_files` plus every *.pub in the config folder's trusted-keys/."""
        files = list(trust_files)
        folder = trusted_dir()
        if folder.is_dir():
            files += sorted(folder.glob(f"*{KEY_SUFFIX}"))
        keys = {}
        for path in files:
            keys.update(read_public_keys(path))
        if pin is not None:
            pin = pin.lower().removeprefix("sha256:")
            if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):
                raise InputError(f"--pin {printable(pin)!r}: expected the 64 hex digits of a sha256")
        return cls(keys, pin)


@dataclass
class Provenance:
    """Who made a bundle, as far as this device can tell."""

    digest: str
    signer: str | None     # key fingerprint named by the signature, if signed
    verified: bool         # signature checked against a trusted key
    warning: str | None    # set when the bundle opens without a verified signature

    def line(self) -> str:
        if self.verified:
            who = f"signed by trusted key {self.signer}"
        elif self.signer:
            who = f"signed by key {self.signer}, not checked: no key is trusted here"
        else:
            who = "unsigned"
        return f"sha256 {self.digest}, {who}"


def check(bundle: Path, folder: Path, manifest_bytes: bytes, trust: Trust) -> Provenance:
    """The bundle's provenance, or InputError when `trust` refuses it."""
    digest = sha256_file(bundle)
    if trust.pin and digest != trust.pin:
        raise InputError(f"{bundle}: sha256 {digest} is not the pinned {trust.pin}")
    signature = _read_signature(folder / SIGNATURE)
    if signature is None:
        if trust.keys:
            raise InputError(f"{bundle}: not signed, and this device trusts only bundles signed by "
                             f"{', '.join(trust.keys)} (sha256 {digest})")
        return Provenance(digest, None, False, None if trust.pin else
                          "unsigned bundle: its origin is not checked (sign it with `bundle --sign KEY`, "
                          "trust the key here with --trust)")
    signer, blob = signature
    if not trust.keys:
        return Provenance(digest, signer, False, None if trust.pin else
                          f"signed by key {signer}, but no key is trusted here to check it (--trust KEY.pub)")
    if signer not in trust.keys:
        raise InputError(f"{bundle}: signed by key {signer}, which this device does not trust "
                         f"(trusted: {', '.join(trust.keys)})")
    ed25519, _, invalid, _ = _crypto()
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(trust.keys[signer]).verify(blob, manifest_bytes)
    except invalid:
        raise InputError(f"{bundle}: the signature by key {signer} does not match manifest.json "
                         f"(changed after signing)") from None
    return Provenance(digest, signer, True, None)


def _read_signature(path: Path) -> tuple[str, bytes] | None:
    if not path.is_file():
        return None
    where = f"{SIGNATURE} in the bundle"
    if path.stat().st_size > MAX_SIGNATURE_BYTES:
        raise InputError(f"{where}: larger than {MAX_SIGNATURE_BYTES} bytes")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        algorithm, key, blob = obj["algorithm"], obj["key"], base64.b64decode(obj["signature"], validate=True)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: not a signature record ({type(exc).__name__})") from None
    if algorithm != "ed25519" or not isinstance(key, str) or len(blob) != 64:
        raise InputError(f"{where}: expected an ed25519 signature of 64 bytes and a key fingerprint")
    return printable(key)[:64], blob


# --- the workstation's side ----------------------------------------------------------------

def generate_key(private_path: Path, comment: str) -> tuple[Path, Path, str]:
    """Write an Ed25519 key pair: PRIVATE (PEM, mode 0600) and PRIVATE.pub (OpenSSH line)."""
    ed25519, serialization, _, unsupported = _crypto()
    private_path = Path(private_path)
    public_path = private_path.with_name(private_path.name.removesuffix(".key") + KEY_SUFFIX)
    for path in (private_path, public_path):
        if path.exists():
            raise InputError(f"{path}: already exists; refusing to overwrite a key")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    public = key.public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(line + f" {comment}\n".encode())
    return private_path, public_path, fingerprint(raw)


def sign(private_path: Path, manifest_bytes: bytes) -> bytes:
    """The manifest.sig record for `manifest_bytes`, signed with the PEM key at `private_path`."""
    ed25519, serialization, _, unsupported = _crypto()
    private_path = Path(private_path)
    if not private_path.is_file():
        raise InputError(f"{private_path}: signing key not found (make one with `edgefashion keygen`)")
    try:
        key = serialization.load_pem_private_key(private_path.read_bytes()[:65536], password=None)
    except (ValueError, TypeError, unsupported) as exc:
        raise InputError(f"{private_path}: not an unencrypted PEM private key ({printable(str(exc)[:80])})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InputError(f"{private_path}: a {type(key).__name__}, expected an Ed25519 private key")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    record = {"algorithm": "ed25519", "key": fingerprint(raw),
              "signature": base64.b64encode(key.sign(manifest_bytes)).decode("ascii"),
              "signs": "the exact bytes of manifest.json, which lists the sha256 of every other file"}
    return json.dumps(record, indent=2).encode()
