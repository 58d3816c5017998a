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
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..console import printable
from ..errors import InputError, MissingDependency
from ..files import TEMP_MARK, remove_leftovers, sha256_file, write_bytes

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


MAX_KEY_BYTES = 65536  # a key file is a few hundred bytes: a larger one is refused before it is read


def read_key_file(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise InputError(f"{path}: {what} not found (or not a regular file)")
    if path.stat().st_size > MAX_KEY_BYTES:
        raise InputError(f"{path}: {path.stat().st_size} bytes, more than the {MAX_KEY_BYTES} a {what} file may have")
    with open(path, "rb") as f:
        return f.read(MAX_KEY_BYTES)


def read_public_keys(path: Path) -> dict[str, bytes]:
    """{fingerprint: raw key} from an OpenSSH-style .pub file (one key a line) or a PEM public key."""
    ed25519, serialization, _, unsupported = _crypto()
    path = Path(path)
    text = read_key_file(path, "public key")
    blocks = [text] if text.lstrip().startswith(b"-----BEGIN") else \
        [line for line in text.splitlines() if line.strip() and not line.startswith(b"#")]
    if b"PRIVATE KEY" in text:
        raise InputError(f"{path}: is a private key; give its public half ({path.name.removesuffix('.key')}.pub, "
                         f"written beside it by `edgefashion keygen`), and keep the private key off the device")
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
    allow_downgrade: bool = False  # accept a signed bundle older than the newest accepted from its key

    @classmethod
    def load(cls, trust_files=(), pin: str | None = None, allow_downgrade: bool = False) -> "Trust":
        """Keys from `trust_files` plus every *.pub in the config folder's trusted-keys/."""
        keys = {}
        for path in trust_files:  # asked for by name: a bad one is an error
            keys.update(read_public_keys(path))
        folder = trusted_dir()
        for path in sorted(folder.glob(f"*{KEY_SUFFIX}")) if folder.is_dir() else []:
            try:
                keys.update(read_public_keys(path))
            except InputError as exc:  # one broken file in the folder must not stop every command
                print(printable(f"warning: ignoring a trusted key: {exc}"), file=sys.stderr)
        if pin is not None:
            pin = pin.lower().removeprefix("sha256:")
            if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):
                raise InputError(f"--pin {printable(pin)!r}: expected the 64 hex digits of a sha256")
        return cls(keys, pin, allow_downgrade)


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


def check(bundle: Path, folder: Path, manifest_bytes: bytes, trust: Trust, digest: str | None = None) -> Provenance:
    """The bundle's provenance, or InputError when `trust` refuses it. `digest`: the sha256 of the bytes
    that were extracted (else the file is hashed again)."""
    digest = digest or sha256_file(bundle)
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
    check_not_older(bundle, signer, manifest_bytes, trust)
    return Provenance(digest, signer, True, None)


ACCEPTED = "accepted.json"  # in the config folder: {key fingerprint: creation time of the newest bundle accepted}


def check_not_older(bundle: Path, signer: str, manifest_bytes: bytes, trust: Trust) -> None:
    """Rollback protection: a validly signed bundle older than the newest this device accepted from the
    same key is refused (an attacker could replay an old, signed, vulnerable bundle), unless
    --allow-downgrade; a newer one becomes the newest."""
    from datetime import datetime

    try:
        created = datetime.strptime(json.loads(manifest_bytes)["created"], "%Y-%m-%dT%H:%M:%S%z")
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{bundle}: a signed manifest without a readable creation time ({type(exc).__name__})") from None
    path = config_dir() / ACCEPTED
    try:
        seen = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        newest = datetime.fromisoformat(seen[signer]) if signer in seen else None
    except (ValueError, TypeError, OSError, AttributeError):
        seen, newest = {}, None  # a damaged record protects nothing: start it again
    if newest is not None and created < newest:
        if not trust.allow_downgrade:
            raise InputError(f"{bundle}: created {created.isoformat()}, older than the newest bundle this device "
                             f"accepted from key {signer} ({newest.isoformat()}); --allow-downgrade accepts it")
        return
    if newest is None or created > newest:
        seen = {**(seen if isinstance(seen, dict) else {}), signer: created.isoformat()}
        try:
            write_bytes(path, json.dumps(seen, indent=2).encode())
        except OSError as exc:
            print(printable(f"warning: cannot record the newest bundle in {path} ({exc.strerror})"), file=sys.stderr)


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
    if private_path.name.endswith(KEY_SUFFIX):
        raise InputError(f"{private_path}: the private key's name ends in {KEY_SUFFIX}, the public key's suffix; "
                         f"name it e.g. {private_path.name.removesuffix(KEY_SUFFIX)}.key")
    public_path = private_path.with_name(private_path.name.removesuffix(".key") + KEY_SUFFIX)
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise InputError(f"{path}: already exists; refusing to overwrite a key")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    public = key.public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    _write_pair({private_path: (pem, 0o600), public_path: (line + f" {comment}\n".encode(), 0o644)})
    return private_path, public_path, fingerprint(raw)


def _write_pair(files: dict[Path, tuple[bytes, int]]) -> None:
    """Both files or neither: each written to a private temporary name first, then linked into place
    (os.link never follows a link at the destination and fails if it exists)."""
    temps, placed = {}, []
    try:
        for path, (content, mode) in files.items():
            remove_leftovers(path.parent, of=path.name)  # of a keygen killed before it finished
            temp = path.with_name(f".{path.name}.{TEMP_MARK}{os.getpid()}-")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            temps[path] = temp
            with os.fdopen(fd, "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
        for path, temp in temps.items():
            os.link(temp, path)
            placed.append(path)
    except OSError as exc:
        for path in placed:
            path.unlink(missing_ok=True)
        raise InputError(f"{next(iter(files))}: cannot write the key pair ({exc.strerror}); nothing was written") from None
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)


def sign(private_path: Path, manifest_bytes: bytes) -> bytes:
    """The manifest.sig record for `manifest_bytes`, signed with the PEM key at `private_path`."""
    ed25519, serialization, _, unsupported = _crypto()
    private_path = Path(private_path)
    if not private_path.is_file():
        raise InputError(f"{private_path}: signing key not found (make one with `edgefashion keygen`)")
    try:
        key = serialization.load_pem_private_key(read_key_file(private_path, "private key"), password=None)
    except (ValueError, TypeError, unsupported) as exc:
        raise InputError(f"{private_path}: not an unencrypted PEM private key ({printable(str(exc)[:80])})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InputError(f"{private_path}: a {type(key).__name__}, expected an Ed25519 private key")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    record = {"algorithm": "ed25519", "key": fingerprint(raw),
              "signature": base64.b64encode(key.sign(manifest_bytes)).decode("ascii"),
              "signs": "the exact bytes of manifest.json, which lists the sha256 of every other file"}
    return json.dumps(record, indent=2).encode()
