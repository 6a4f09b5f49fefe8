"""Firmware bundles for TFLite Micro: the .tflite, C source embedding it, a manifest, an
optional Ed25519 signature, optionally one .tar.gz; and their verification.

    bundle/
      model.tflite
      model_data.h        extern alignas(16) const unsigned char g_model[]; g_model_len
      model_data.cc       the bytes
      manifest.json       target, I/O quantization, ops to register with MicroMutableOpResolver,
                          tensor-arena estimate, SHA-256 of every other file, edgeq version
      manifest.json.sig   (--sign) raw 64-byte Ed25519 signature of manifest.json

The manifest carries the hashes and the signature covers the manifest, so one signature
authenticates every file. `verify_bundle` works like a firmware updater (see "verifying"
below): it refuses a changed byte, a missing, extra or duplicate file, a size other than the
manifest's, links, devices and sparse members, absolute or `..` paths, truncated or corrupt
archives, an empty manifest, a bad signature or a wrong key; it never extracts anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from edgeq import __version__
from edgeq.errors import EdgeqError
from edgeq.files import file_sha256
from edgeq.outputs import OutputKind, check_output, create_new_file, write_output

from .builder import TYPE_NAMES, builtin_name, read_metadata, read_model

BUNDLE_FORMAT = "edgeq-firmware-bundle"
MANIFEST = "manifest.json"
MANIFEST_VERSION = 2  # 2: sizes of every file
SIGNATURE = "manifest.json.sig"
ARENA_ALIGN = 16

# builtin → MicroMutableOpResolver method (tensorflow/lite/micro/micro_mutable_op_resolver.h)
_RESOLVER_SPECIAL = {
    "CONV_2D": "AddConv2D", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "AVERAGE_POOL_2D": "AddAveragePool2D", "MAX_POOL_2D": "AddMaxPool2D", "PADV2": "AddPadV2",
    "RELU6": "AddRelu6", "BATCH_MATMUL": "AddBatchMatMul", "L2_NORMALIZATION": "AddL2Normalization",
}  # fmt: skip


class BundleError(EdgeqError):
    """A bundle is incomplete, altered, unsafe or not signed by the expected key."""


def _bundle_entries(folder: Path) -> list[str] | None:
    """The files of an earlier bundle in `folder` (its manifest is its marker), else None."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        return None
    files = manifest.get("files")
    names = [n for n in (files if isinstance(files, dict) else {}) if "/" not in str(n)]
    return sorted({*names, MANIFEST, SIGNATURE})


def _is_bundle_tar(path: Path) -> list[str] | None:
    """[] if `path` is a bundle tarball edgeq wrote (its first member is the manifest)."""
    try:
        with tarfile.open(path, "r|gz") as tf:
            first = tf.next()
            src = tf.extractfile(first) if first is not None and first.isfile() else None
            if src is None or not first.name.endswith("/" + MANIFEST) or first.size > 1 << 20:
                return None
            manifest = json.loads(src.read())
    except (OSError, ValueError, tarfile.TarError, EOFError):
        return None
    return [] if isinstance(manifest, dict) and manifest.get("format") == BUNDLE_FORMAT else None


# bundle folders carry no marker file: their manifest must list every file they hold
BUNDLE = OutputKind("bundle", "an edgeq firmware bundle", marker=False, recognize=_bundle_entries)
BUNDLE_TAR = OutputKind("bundle", "an edgeq firmware bundle (.tar.gz)", folder=False,
                        recognize=_is_bundle_tar)  # fmt: skip
KEY_FILE = OutputKind("key", "a key file", folder=False, recognize=lambda _: None)


def resolver_method(builtin: str) -> str:
    if builtin in _RESOLVER_SPECIAL:
        return _RESOLVER_SPECIAL[builtin]
    return "Add" + "".join(part.capitalize() for part in builtin.split("_"))


def sha256_file(path: Path) -> str:
    return file_sha256(path)


# ---- what the firmware needs to know ---------------------------------------------------------
def arena_estimate(model: Any) -> dict[str, Any]:
    """Tensor-arena bytes: the activation tensors placed by a greedy first-fit planner over
    their lifetimes (what TFLM's GreedyMemoryPlanner does: biggest first, 16-byte aligned,
    tensors alive at the same time never overlap), plus per-op scratch for the int8 conv
    kernels (per-channel multiplier and shift: 8 bytes per output channel) and bookkeeping
    (64 bytes per tensor, 1 KiB fixed). An estimate: confirm on the device with
    MicroInterpreter::arena_used_bytes() and keep a margin."""
    sub = model.subgraphs[0]
    n_ops = len(sub.operators)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for i in sub.inputs:
        first[int(i)], last[int(i)] = 0, 0
    for k, op in enumerate(sub.operators):
        for i in op.inputs:
            if i >= 0 and model.buffers[sub.tensors[i].buffer].data is None:
                first.setdefault(int(i), k)
                last[int(i)] = k
        for o in op.outputs:
            first.setdefault(int(o), k)
            last[int(o)] = max(last.get(int(o), k), k)
    for o in sub.outputs:
        last[int(o)] = n_ops
    sizes = {}
    for t in first:
        tensor = sub.tensors[t]
        itemsize = np.dtype(
            {"int4": "int8", "bool": "bool"}.get(TYPE_NAMES[tensor.type], TYPE_NAMES[tensor.type])
        ).itemsize
        nbytes = (
            int(np.prod(tensor.shape if tensor.shape is not None else [], dtype=np.int64))
            * itemsize
        )
        sizes[t] = -(-nbytes // ARENA_ALIGN) * ARENA_ALIGN
    placed: list[tuple[int, int, int, int]] = []  # offset, size, first, last
    peak = 0
    for t in sorted(sizes, key=lambda x: -sizes[x]):
        live = sorted(
            (p for p in placed if not (p[3] < first[t] or p[2] > last[t])), key=lambda p: p[0]
        )
        offset = 0
        for p_off, p_size, _, _ in live:
            if offset + sizes[t] <= p_off:
                break
            offset = max(offset, p_off + p_size)
        placed.append((offset, sizes[t], first[t], last[t]))
        peak = max(peak, offset + sizes[t])
    scratch = 0
    for op in sub.operators:
        name = builtin_name(model.operatorCodes[op.opcodeIndex].builtinCode)
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"):
            scratch += 8 * int(sub.tensors[op.outputs[0]].shape[-1])
    overhead = 64 * len(sub.tensors) + 1024
    total = -(-(peak + scratch + overhead) // 1024) * 1024
    return {
        "bytes": total, "activations_bytes": peak, "scratch_bytes": scratch,
        "overhead_bytes": overhead,
        "method": "greedy first-fit of activation lifetimes (as TFLM's GreedyMemoryPlanner), "
                  "16-byte aligned, + 8 B/output channel for int8 conv/FC + 64 B/tensor + 1 KiB; "
                  "confirm with MicroInterpreter::arena_used_bytes()",
    }  # fmt: skip


def describe_model(data: bytes) -> dict[str, Any]:
    model = read_model(data)
    sub = model.subgraphs[0]
    meta = read_metadata(model, "edgeq") or {}

    def io_rows(indices: list[int], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for k, i in enumerate(indices):
            t = sub.tensors[i]
            q = t.quantization
            row: dict[str, Any] = {
                "name": rows[k]["name"] if k < len(rows) else t.name.decode(),
                "tensor": t.name.decode() if isinstance(t.name, bytes) else t.name,
                "shape": [int(d) for d in t.shape], "dtype": TYPE_NAMES[t.type],
            }  # fmt: skip
            if q is not None and q.scale is not None and len(q.scale):
                row["scale"], row["zero_point"] = float(q.scale[0]), int(q.zeroPoint[0])
            if k < len(rows) and rows[k].get("perm"):
                row["layout_from_onnx"] = rows[k]["perm"]
            out.append(row)
        return out

    builtins = sorted({builtin_name(model.operatorCodes[op.opcodeIndex].builtinCode)
                       for op in sub.operators})  # fmt: skip
    return {
        "target": meta.get("target", ""),
        "inputs": io_rows(list(sub.inputs), meta.get("inputs", [])),
        "outputs": io_rows(list(sub.outputs), meta.get("outputs", [])),
        "builtins": builtins,
        "op_resolver": {"count": len(builtins), "add": [resolver_method(b) for b in builtins]},
        "arena": arena_estimate(model),
    }


# ---- C source ------------------------------------------------------------------------------
def c_sources(data: bytes, symbol: str = "g_model") -> tuple[str, str]:
    header = (
        "// Generated by edgeq: the model flatbuffer for TFLite Micro.\n"
        "#ifndef EDGEQ_MODEL_DATA_H_\n#define EDGEQ_MODEL_DATA_H_\n\n"
        f"extern const unsigned char {symbol}[];\nextern const unsigned int {symbol}_len;\n\n"
        "#endif  // EDGEQ_MODEL_DATA_H_\n"
    )
    rows = []
    for i in range(0, len(data), 12):
        rows.append("  " + ", ".join(f"0x{b:02x}" for b in data[i : i + 12]) + ",")
    source = (
        "// Generated by edgeq: the model flatbuffer for TFLite Micro.\n"
        '#include "model_data.h"\n\n'
        f"alignas(16) const unsigned char {symbol}[] = {{\n" + "\n".join(rows) + "\n};\n"
        f"const unsigned int {symbol}_len = {len(data)};\n"
    )
    return header, source


# ---- keys ------------------------------------------------------------------------------------
def generate_key(private_path: Path, public_path: Path) -> None:
    """An Ed25519 key pair as PEM (PKCS#8 private key, SubjectPublicKeyInfo public key); the
    same files `openssl genpkey -algorithm ed25519` / `openssl pkey -pubout` write."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
    taken = [str(p) for p in (private_path, public_path) if os.path.lexists(p)]
    if taken:
        raise BundleError(f"refusing to overwrite {' and '.join(repr(t) for t in taken)}",
                          "pick a new key name, or move the old key away yourself")  # fmt: skip
    for path in (private_path, public_path):
        check_output(path, KEY_FILE)
    Path(private_path).parent.mkdir(parents=True, exist_ok=True)
    create_new_file(private_path, priv, 0o600)
    try:
        create_new_file(public_path, pub, 0o644)
    except BaseException:
        Path(private_path).unlink(missing_ok=True)
        raise


def _load_private(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise BundleError(f"cannot read the signing key '{path}' ({exc})",
                          "pass an unencrypted Ed25519 PEM key (edgeq keygen)") from None  # fmt: skip
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"'{path}' is not an Ed25519 private key",
                          "create one with `edgeq keygen` or `openssl genpkey -algorithm ed25519`")  # fmt: skip
    return key


def _load_public(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = Path(path).read_bytes()
        key = (serialization.load_pem_public_key(raw) if b"PUBLIC KEY" in raw
               else serialization.load_pem_private_key(raw, password=None).public_key())  # fmt: skip
    except (OSError, ValueError, TypeError) as exc:
        raise BundleError(f"cannot read the public key '{path}' ({exc})",
                          "pass the Ed25519 public key PEM written by `edgeq keygen`") from None  # fmt: skip
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"'{path}' is not an Ed25519 public key", "pass an Ed25519 key")
    return key


def _key_id(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


# ---- writing ---------------------------------------------------------------------------------
def make_bundle(tflite: Path, out: Path, sign_key: Path | None = None, tar: bool = False,
                target: str | None = None, force: bool = False) -> Path:  # fmt: skip
    """Write the bundle folder `out` (or `out` + .tar.gz when `tar`); returns what was written.
    An existing `out` must be an earlier bundle (or `force`: only the bundle's files change)."""
    tflite = Path(tflite)
    target_path = Path(str(out).removesuffix(".tar.gz") + ".tar.gz") if tar else Path(out)
    check_output(target_path, BUNDLE_TAR if tar else BUNDLE, force)
    if not tflite.is_file():
        raise BundleError(f"'{tflite}' does not exist", "pass the .tflite written by edgeq export")
    data = tflite.read_bytes()
    if data[4:8] != b"TFL3":
        raise BundleError(f"'{tflite}' is not a .tflite flatbuffer (no TFL3 identifier)",
                          "pass the .tflite written by edgeq export")  # fmt: skip
    try:
        info = describe_model(data)
    except Exception as exc:  # flatbuffers raises anything on a broken buffer
        raise BundleError(f"'{tflite}' starts like a .tflite but is not a valid one "
                          f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})",
                          "pass the .tflite written by edgeq export") from None  # fmt: skip
    key = _load_private(sign_key) if sign_key is not None else None

    def write(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "model.tflite").write_bytes(data)
        header, source = c_sources(data)
        (tmp / "model_data.h").write_text(header)
        (tmp / "model_data.cc").write_text(source)
        members = ("model.tflite", "model_data.cc", "model_data.h")
        manifest = {
            "format": BUNDLE_FORMAT, "version": MANIFEST_VERSION, "edgeq_version": __version__,
            "target": target or info["target"], "model": "model.tflite",
            "model_symbol": "g_model", "model_bytes": len(data),
            "inputs": info["inputs"], "outputs": info["outputs"],
            "builtins": info["builtins"], "op_resolver": info["op_resolver"],
            "arena": info["arena"],
            "files": {name: sha256_file(tmp / name) for name in members},
            "sizes": {name: (tmp / name).stat().st_size for name in members},
        }  # fmt: skip
        if key is not None:
            manifest["signature"] = {"algorithm": "ed25519", "file": SIGNATURE,
                                     "public_key_sha256": _key_id(key.public_key())}  # fmt: skip
        payload = (json.dumps(manifest, indent=1) + "\n").encode()
        (tmp / MANIFEST).write_bytes(payload)
        if key is not None:
            (tmp / SIGNATURE).write_bytes(key.sign(payload))

    if not tar:
        return write_output(target_path, BUNDLE, write, force=force)
    folder_name = target_path.name.removesuffix(".tar.gz")

    def write_tar(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="edgeq-bundle-") as work:
            folder = Path(work) / folder_name
            write(folder)
            with tarfile.open(tmp, "w:gz") as tf:
                for path in sorted(folder.iterdir()):
                    ti = tf.gettarinfo(str(path), arcname=f"{folder_name}/{path.name}")
                    ti.uid = ti.gid = 0
                    ti.uname = ti.gname = ""
                    ti.mtime = 0
                    with open(path, "rb") as fh:
                        tf.addfile(ti, fh)

    return write_output(target_path, BUNDLE_TAR, write_tar, force=force)


# ---- verifying -------------------------------------------------------------------------------
# Like a firmware updater: the manifest names every member with its size and SHA-256; a member
# it does not name, a second member of one name, anything but a regular file (links, devices,
# sparse files, folders beyond the bundle's own), an absolute or `..` path is refused. A
# tarball is never extracted: it is streamed once, its manifest first (as `edgeq bundle --tar`
# writes it), and each member is hashed as it streams, refused as soon as it would pass its
# declared size; the gzip stream is read to its end, so a truncated or corrupt archive fails.
MANIFEST_MAX_BYTES = 1 << 20
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)
_REBUILD = "do not flash it; rebuild it with `edgeq bundle` (or re-download it)"


@dataclass
class Verification:
    path: Path
    files: list[str] = field(default_factory=list)
    signed: bool = False
    signature_checked: bool = False
    target: str = ""


def _unsafe(name: str) -> bool:
    p = PurePosixPath(name)
    return (not name or name.startswith(("/", "\\")) or p.is_absolute() or ".." in p.parts
            or "\\" in name or ":" in name or "\0" in name)  # fmt: skip


def parse_manifest(payload: bytes, where: str) -> dict[str, Any]:
    """The manifest, checked: an object of this format and version that lists at least the
    model, each file by a plain name with its SHA-256 and size."""
    if len(payload) > MANIFEST_MAX_BYTES:
        raise BundleError(f"{MANIFEST} in {where} is over {MANIFEST_MAX_BYTES} bytes", _REBUILD)
    try:
        manifest = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise BundleError(f"{MANIFEST} in {where} is not UTF-8 text", _REBUILD) from None
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{MANIFEST} in {where} is not valid JSON ({' '.join(str(exc).split())})",
                          _REBUILD) from None  # fmt: skip
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{where} is not an edgeq firmware bundle (its {MANIFEST} is not one)",
                          _REBUILD)  # fmt: skip
    if manifest.get("version") != MANIFEST_VERSION:
        raise BundleError(f"{where}: manifest version {manifest.get('version')!r} is not "
                          f"{MANIFEST_VERSION}", "rebuild the bundle with this edgeq")  # fmt: skip
    files, sizes = manifest.get("files"), manifest.get("sizes")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{where}: the manifest lists no files", _REBUILD)
    if not isinstance(sizes, dict) or set(sizes) != set(files):
        raise BundleError(f"{where}: the manifest does not give the size of every file", _REBUILD)
    for name, digest in files.items():
        if _unsafe(name) or "/" in name or name in (MANIFEST, SIGNATURE):
            raise BundleError(f"{where}: the manifest lists an unsafe name {name!r}", _REBUILD)
        if not (isinstance(digest, str) and len(digest) == 64
                and all(c in "0123456789abcdef" for c in digest)):  # fmt: skip
            raise BundleError(f"{where}: the manifest's SHA-256 of {name!r} is malformed", _REBUILD)
        size = sizes[name]
        if type(size) is not int or size < 0:
            raise BundleError(f"{where}: the manifest's size of {name!r} is not a byte count",
                              _REBUILD)  # fmt: skip
    if manifest.get("model") not in files:
        raise BundleError(f"{where}: the manifest does not list its model file", _REBUILD)
    sig = manifest.get("signature")
    if sig is not None and not (isinstance(sig, dict) and sig.get("file") == SIGNATURE
                                and sig.get("algorithm") == "ed25519"):  # fmt: skip
        raise BundleError(f"{where}: the manifest's signature entry is malformed", _REBUILD)
    return manifest


def _expected(manifest: dict[str, Any]) -> set[str]:
    return set(manifest["files"]) | {MANIFEST} | ({SIGNATURE} if "signature" in manifest else set())


def _require_all(expected: set[str], present: set[str]) -> None:
    missing = sorted(expected - present)
    if missing:
        raise BundleError(f"bundle is incomplete: '{missing[0]}' is missing",
                          "copy the whole bundle again or rebuild it")  # fmt: skip


def _check_signature(manifest: dict[str, Any], payload: bytes, signature: bytes | None,
                     pubkey: Path) -> None:  # fmt: skip
    from cryptography.exceptions import InvalidSignature

    key = _load_public(pubkey)
    if "signature" not in manifest or signature is None:
        raise BundleError("bundle is not signed (no manifest.json.sig)",
                          "rebuild it with `edgeq bundle --sign KEY`")  # fmt: skip
    try:
        key.verify(signature, payload)
    except InvalidSignature:
        raise BundleError("signature does not verify with this public key (wrong key or altered manifest)",
                          "use the key the bundle was signed with; do not flash it otherwise") from None  # fmt: skip


def verify_bundle(path: Path, pubkey: Path | None = None) -> Verification:
    """Check every member (and the signature, given the public key). Raises BundleError with a
    one-line reason; writes nothing anywhere."""
    path = Path(path)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        return _verify_tar(path, pubkey)
    if not path.is_dir():
        raise BundleError(f"'{path}' is not a bundle folder or .tar.gz",
                          "pass the folder or tarball written by `edgeq bundle`")  # fmt: skip
    return _verify_folder(path, pubkey)


def _verify_folder(folder: Path, pubkey: Path | None) -> Verification:
    entries = {e.name: e for e in os.scandir(folder)}
    if MANIFEST not in entries:
        raise BundleError(f"bundle '{folder}' has no {MANIFEST}", "rebuild it with `edgeq bundle`")
    for name, entry in entries.items():
        if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
            kind = (
                "a link"
                if entry.is_symlink()
                else "a folder"
                if entry.is_dir()
                else "not a regular file"
            )
            raise BundleError(f"bundle '{folder}': '{name}' is {kind}", _REBUILD)
    if entries[MANIFEST].stat().st_size > MANIFEST_MAX_BYTES:
        raise BundleError(f"{MANIFEST} in '{folder}' is over {MANIFEST_MAX_BYTES} bytes", _REBUILD)
    payload = (folder / MANIFEST).read_bytes()
    manifest = parse_manifest(payload, f"'{folder}'")
    expected = _expected(manifest)
    _require_all(expected, set(entries))
    extra = sorted(set(entries) - expected)
    if extra:
        raise BundleError(f"bundle has files the manifest does not cover: {extra}",
                          "remove them or rebuild the bundle")  # fmt: skip
    for name, digest in manifest["files"].items():
        size = entries[name].stat().st_size
        if size != manifest["sizes"][name]:
            raise BundleError(f"'{name}' has {size} bytes, the manifest says "
                              f"{manifest['sizes'][name]} (altered or truncated)", _REBUILD)  # fmt: skip
        if sha256_file(folder / name) != digest:
            raise BundleError(f"'{name}' does not match its SHA-256 in the manifest (altered or corrupt)",
                              _REBUILD)  # fmt: skip
    signature = None
    if SIGNATURE in entries:
        if entries[SIGNATURE].stat().st_size > 4096:
            raise BundleError(f"{SIGNATURE} is not a signature (too large)", _REBUILD)
        signature = (folder / SIGNATURE).read_bytes()
    result = Verification(folder, sorted(manifest["files"]), signed="signature" in manifest,
                          target=str(manifest.get("target", "")))  # fmt: skip
    if pubkey is not None:
        _check_signature(manifest, payload, signature, pubkey)
        result.signature_checked = True
    return result


class _Capped(io.RawIOBase):
    """Reads `source`, refusing once more than `cap` bytes (adjustable) came through."""

    def __init__(self, source: Any, cap: int, where: str) -> None:
        self.source, self.cap, self.count, self.where = source, cap, 0, where

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        room = self.cap - self.count
        if room <= 0:
            raise BundleError(f"{self.where} holds more data than its manifest declares",
                              _REBUILD)  # fmt: skip
        view = memoryview(buffer)[: min(len(buffer), room + 1)]
        data = self.source.read(len(view))
        view[: len(data)] = data
        self.count += len(data)
        if self.count > self.cap:
            raise BundleError(f"{self.where} holds more data than its manifest declares",
                              _REBUILD)  # fmt: skip
        return len(data)


def _verify_tar(path: Path, pubkey: Path | None) -> Verification:
    import gzip
    import zlib

    from edgeq.files import max_bytes

    where = f"'{path.name}'"
    try:
        with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as gz:
            stream = _Capped(gz, max_bytes(), where)
            with tarfile.open(fileobj=io.BufferedReader(stream, 1 << 16), mode="r|") as tf:
                manifest, payload, signature, seen = _stream_members(tf, stream, where)
            while stream.read(1 << 16):  # to the end: gzip checks its length and CRC there
                pass
    except BundleError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise BundleError(f"{where} is not a complete, readable .tar.gz ({why}): truncated or corrupt",
                          "re-download it or rebuild it with `edgeq bundle --tar`") from None  # fmt: skip
    _require_all(_expected(manifest), seen)
    result = Verification(path, sorted(manifest["files"]), signed="signature" in manifest,
                          target=str(manifest.get("target", "")))  # fmt: skip
    if pubkey is not None:
        _check_signature(manifest, payload, signature, pubkey)
        result.signature_checked = True
    return result


def _stream_members(tf: tarfile.TarFile, stream: _Capped,
                    where: str) -> tuple[dict[str, Any], bytes, bytes | None, set[str]]:  # fmt: skip
    """Walk the tarball once, checking each member as it comes."""
    manifest: dict[str, Any] | None = None
    payload = b""
    signature: bytes | None = None
    folder: str | None = None
    seen: set[str] = set()
    for m in tf:
        if _unsafe(m.name):
            raise BundleError(f"{where} has an unsafe member '{m.name}' (absolute path or '..')",
                              "refusing it; rebuild the bundle with `edgeq bundle --tar`")  # fmt: skip
        parts = PurePosixPath(m.name).parts
        if m.isdir() and len(parts) == 1 and folder in (None, parts[0]) and not seen:
            folder = parts[0]  # the bundle's own folder entry (`tar czf fw.tar.gz fw/`)
            continue
        if m.type not in _REGULAR or m.issparse():
            kind = ("a link" if m.issym() or m.islnk() else "a folder" if m.isdir()
                    else "a sparse file" if m.issparse() else "a device or special file")  # fmt: skip
            raise BundleError(f"{where} has a member '{m.name}' that is {kind}",
                              "refusing it; a bundle holds regular files only")  # fmt: skip
        if len(parts) > 2 or (folder is not None and len(parts) == 2 and parts[0] != folder):
            raise BundleError(f"{where} has a member '{m.name}' outside the bundle's folder",
                              _REBUILD)  # fmt: skip
        if len(parts) == 2:
            folder = parts[0]
        elif folder is not None:
            raise BundleError(f"{where} has a member '{m.name}' outside the bundle's folder",
                              _REBUILD)  # fmt: skip
        name = parts[-1]
        if name in seen:
            raise BundleError(f"{where} holds '{name}' twice (a second copy could replace the "
                              "checked one when extracted)", _REBUILD)  # fmt: skip
        seen.add(name)
        if manifest is None:
            if name != MANIFEST:
                raise BundleError(f"{where}: the first file is '{name}', not {MANIFEST}",
                                  "rebuild it with `edgeq bundle --tar` (the manifest comes first)")  # fmt: skip
            if m.size > MANIFEST_MAX_BYTES:
                raise BundleError(f"{MANIFEST} in {where} is over {MANIFEST_MAX_BYTES} bytes",
                                  _REBUILD)  # fmt: skip
            payload = _read_member(tf, m)
            manifest = parse_manifest(payload, where)
            declared = sum(manifest["sizes"].values())
            # headers (512 B each, +pax), padding and the end blocks: generous but bounded
            stream.cap = min(
                stream.cap, stream.count + declared + 4096 * (len(manifest["files"]) + 4) + 20480
            )
            continue
        if name == SIGNATURE and "signature" in manifest:
            if m.size > 4096:
                raise BundleError(
                    f"{SIGNATURE} in {where} is not a signature (too large)", _REBUILD
                )
            signature = _read_member(tf, m)
            continue
        if name not in manifest["files"]:
            raise BundleError(f"{where} holds '{m.name}', which the manifest does not list",
                              "refusing it; rebuild the bundle")  # fmt: skip
        declared = manifest["sizes"][name]
        if m.size != declared:
            raise BundleError(f"'{name}' in {where} has {m.size} bytes, the manifest says {declared}",
                              _REBUILD)  # fmt: skip
        src = tf.extractfile(m)
        assert src is not None
        h, got = hashlib.sha256(), 0
        for chunk in iter(lambda: src.read(1 << 20), b""):  # noqa: B023
            got += len(chunk)
            if got > declared:
                raise BundleError(f"'{name}' in {where} is longer than the manifest says", _REBUILD)
            h.update(chunk)
        if got != declared:
            raise BundleError(f"'{name}' in {where} is truncated ({got} of {declared} bytes)",
                              _REBUILD)  # fmt: skip
        if h.hexdigest() != manifest["files"][name]:
            raise BundleError(f"'{name}' does not match its SHA-256 in the manifest (altered or corrupt)",
                              _REBUILD)  # fmt: skip
    if manifest is None:
        raise BundleError(f"{where} holds no {MANIFEST}", _REBUILD)
    return manifest, payload, signature, seen


def _read_member(tf: tarfile.TarFile, m: tarfile.TarInfo) -> bytes:
    src = tf.extractfile(m)
    assert src is not None
    data = src.read(m.size + 1)
    if len(data) != m.size:
        raise BundleError(f"'{m.name}' is truncated", _REBUILD)
    return data


def tar_with_members(out: Path, members: dict[str, bytes]) -> Path:
    """A .tar.gz with exactly these member names (tests build hostile tarballs with it)."""
    with tarfile.open(out, "w:gz") as tf:
        for name, payload in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(payload)
            tf.addfile(ti, io.BytesIO(payload))
    return out


__all__ = [
    "BundleError",
    "Verification",
    "arena_estimate",
    "c_sources",
    "describe_model",
    "generate_key",
    "make_bundle",
    "resolver_method",
    "verify_bundle",
]
