"""Hostile-input fuzzing of the `edgeq` command line (issue #17): seeded mutations of a real
model (PP-OCR mobile v2 direction classifier), of calibration data, of QuantPlans and of
firmware bundles, each run through the command that reads it. Every case must end as a
success or as one clean line `error: <what> — <fix>` (exit 2): no traceback, no hang, no crash.

    python -m benchmarks.fuzz [--cases 1200] [--seed 0] [--timeout 60]

Writes benchmarks/results/fuzz.{json,md}. Cases run in worker processes (so a crash is counted,
not fatal), each command in-process through typer's CliRunner with a per-case time limit.
`tests/test_fuzz.py` runs the same generator, seeded and bounded, in `make test`.

Verdicts: `ok` (exit 0), `refused` (one clean error line from edgeq's own checks), `refused
(unexpected)` (one clean line, but from the CLI's last-resort handler: an error type edgeq did
not anticipate — worth a look), `exit 1` (a clean "not passed" result, e.g. `check`), `bad`
(a traceback, several error lines or another exit code), `hang`, `crash`.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Args = list[str]


@dataclass
class Case:
    index: int
    kind: str
    label: str
    make: Callable[[Path], Args]  # builds the hostile input in a fresh folder; the CLI args


@dataclass
class Outcome:
    index: int
    kind: str
    label: str
    verdict: str
    exit_code: int | None
    seconds: float
    line: str


# ------------------------------------------------------------------------- the workspace
def real_model() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    assert spec is not None and spec.submodule_search_locations, "run `make install`"
    base = Path(next(iter(spec.submodule_search_locations)))
    return base / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"


def build_workspace(root: Path) -> dict[str, Path]:
    """The genuine inputs every mutation starts from: the real model, a small conv model with
    its calibration data, a plan, a .tflite and a signed bundle (folder and tarball)."""
    from typer.testing import CliRunner

    from edgeq.cli import app

    cli = CliRunner()
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w: dict[str, Path] = {"real": real_model()}
    nodes = [helper.make_node("Conv", ["x", "k", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Softmax", ["f"], ["y"], axis=-1, name="softmax")]  # fmt: skip
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "k"),
                     numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    w["small"] = root / "small.onnx"
    w["small"].write_bytes(model.SerializeToString())
    w["calib"] = root / "calib"
    w["calib"].mkdir(exist_ok=True)
    for i in range(4):
        np.save(w["calib"] / f"s{i}.npy", rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32))
        np.savez(root / f"s{i}.npz", x=rng.normal(0, 1, (1, 3, 8, 8)).astype(np.float32))
    w["npz"] = root / "s0.npz"
    steps = [
        ["calibrate", str(w["small"]), "--calib", str(w["calib"]), "--target", "tflm",
         "--report-samples", "0", "-o", str(root / "plan")],
        ["export", str(w["small"]), "--plan", str(root / "plan"), "--target", "tflm",
         "--calib", str(w["calib"]), "-o", str(root / "exp")],
        ["keygen", "-o", str(root / "key.pem")],
        ["bundle", str(root / "exp" / "model.tflite"), "-o", str(root / "fw"), "--sign",
         str(root / "key.pem")],
        ["bundle", str(root / "exp" / "model.tflite"), "-o", str(root / "fwt"), "--tar",
         "--sign", str(root / "key.pem")],
    ]  # fmt: skip
    for args in steps:
        result = cli.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    w.update(plan=root / "plan", tflite=root / "exp" / "model.tflite", key=root / "key.pem",
             pub=root / "key.pem.pub", bundle=root / "fw", tar=root / "fwt.tar.gz")  # fmt: skip
    return w


# ------------------------------------------------------------------------- mutations
ODD_INTS = [0, -1, 1, 2, 3, 7, 255, 256, -129, 65536, 2**31 - 1, 2**31, 2**40, -(2**62)]
ODD_FLOATS = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, -1.0, 1e-45, 1e38, 3e38, 1e300]
ODD_STRINGS = ["", "x", "\u00ff\u0000", "../../etc/passwd", "/abs", "a" * 300, "plan", "🙂"]
OPS = ["Relu", "Conv", "Gather", "Reshape", "MatMul", "Concat", "Softmax", "Foo", "Loop", "If",
       "Resize", "Transpose", "Slice", "Add", "Identity", "NonMaxSuppression", "Pad", "Split"]  # fmt: skip


def mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    if not data:
        return b"\0", "empty->nul"
    b = bytearray(data)
    op = rng.choice(["flip", "flips", "truncate", "zero", "dup", "delete", "insert", "int"])
    i = rng.randrange(len(b))
    if op == "flip":
        b[i] ^= 1 << rng.randrange(8)
    elif op == "flips":
        for _ in range(rng.randint(2, 32)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == "truncate":
        b = b[: rng.randrange(len(b))]
    elif op == "zero":
        n = rng.randint(1, max(1, len(b) // 8))
        b[i : i + n] = bytes(len(b[i : i + n]))
    elif op == "dup":
        n = rng.randint(1, 4096)
        b[i:i] = b[i : i + n]
    elif op == "delete":
        del b[i : i + rng.randint(1, 4096)]
    elif op == "insert":
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        b[i : i + 4] = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0, 0x80000000]).to_bytes(4, "little")
    return bytes(b), f"{op}@{i}"


def mutate_model(model: onnx.ModelProto, rng: random.Random) -> str:
    """One structural change to a ModelProto, in place; returns what it did."""
    g = model.graph
    op = rng.choice(["op_type", "drop_input", "ghost_input", "swap_inputs", "dims", "dtype",
                     "raw_truncate", "external", "attr", "input_dims", "input_dtype", "opset",
                     "ir", "dup_output", "cycle", "rename_output", "drop_node", "domain"])  # fmt: skip
    node = rng.choice(list(g.node)) if len(g.node) else None
    inits = list(g.initializer)
    consts = [n for n in g.node if n.op_type == "Constant" and n.attribute]
    tensor = (rng.choice(inits) if inits else
              rng.choice(consts).attribute[0].t if consts else None)  # fmt: skip
    if op == "op_type" and node is not None:
        node.op_type = rng.choice(OPS)
    elif op == "drop_input" and node is not None and node.input:
        del node.input[rng.randrange(len(node.input))]
    elif op == "ghost_input" and node is not None:
        node.input.append(rng.choice(["ghost", "", "x", "\u00ff"]))
    elif op == "swap_inputs" and node is not None and len(node.input) > 1:
        node.input[0], node.input[1] = node.input[1], node.input[0]
    elif op == "dims" and tensor is not None:
        del tensor.dims[:]
        tensor.dims.extend(rng.choice([[0], [-1], [2**40], [10**12], [3, 0, 5], [1] * 9, []]))
    elif op == "dtype" and tensor is not None:
        tensor.data_type = rng.choice([0, 2, 3, 7, 8, 9, 10, 11, 16, 17, 22, 23, 99])
    elif op == "raw_truncate" and tensor is not None and tensor.raw_data:
        tensor.raw_data = tensor.raw_data[: rng.randrange(len(tensor.raw_data))]
    elif op == "external" and tensor is not None:
        tensor.data_location = TensorProto.EXTERNAL
        del tensor.external_data[:]
        entries = {"location": rng.choice(["w.bin", "../w.bin", "/etc/passwd", "w\0.bin", ""]),
                   "offset": rng.choice(["0", "-5", "x", "99999999999"]),
                   "length": rng.choice(["16", "-1", "1e3", str(10**15)])}  # fmt: skip
        for k, v in entries.items():
            if rng.random() < 0.8:
                tensor.external_data.append(onnx.StringStringEntryProto(key=k, value=v))
    elif op == "attr" and node is not None and node.attribute:
        attr = rng.choice(list(node.attribute))
        if attr.type == onnx.AttributeProto.INT:
            attr.i = rng.choice(ODD_INTS)
        elif attr.type == onnx.AttributeProto.INTS:
            del attr.ints[:]
            attr.ints.extend(rng.choice([[], [0], [-1, -1], [2**31] * 4, [1] * 12]))
        elif attr.type == onnx.AttributeProto.FLOAT:
            attr.f = rng.choice(ODD_FLOATS)
        else:
            attr.type = onnx.AttributeProto.STRING
            attr.s = rng.choice([b"", b"\xff", b"nearest"])
    elif op == "input_dims" and g.input:
        d = g.input[0].type.tensor_type.shape.dim
        if d:
            dim = d[rng.randrange(len(d))]
            if rng.random() < 0.5:
                dim.dim_value = rng.choice([0, 1, 10**6, 2**40])
            else:
                dim.dim_param = rng.choice(["n", "", "\u00ff"])
    elif op == "input_dtype" and g.input:
        g.input[0].type.tensor_type.elem_type = rng.choice([0, 2, 7, 9, 10, 11, 16, 99])
    elif op == "opset":
        model.opset_import[0].version = rng.choice([1, 7, 10, 22, 99])
    elif op == "ir":
        model.ir_version = rng.choice([0, 1, 3, 99])
    elif op == "dup_output" and len(g.node) > 1:
        a, b = rng.sample(range(len(g.node)), 2)
        if g.node[a].output and g.node[b].output:
            g.node[b].output[0] = g.node[a].output[0]
    elif op == "cycle" and len(g.node) > 1:
        a, b = sorted(rng.sample(range(len(g.node)), 2))
        if g.node[a].input and g.node[b].output:
            g.node[a].input[0] = g.node[b].output[0]
    elif op == "rename_output" and g.output:
        g.output[0].name = rng.choice(["nothing", "", "x"])
    elif op == "drop_node" and len(g.node) > 1:
        del g.node[rng.randrange(len(g.node))]
    elif op == "domain" and node is not None:
        node.domain = rng.choice(["com.microsoft", "ai.onnx.ml", "x.y"])
    return op


def mutate_plan_json(meta: Any, rng: random.Random) -> tuple[Any, str]:
    meta = copy.deepcopy(meta)
    op = rng.choice(["drop_key", "add_key", "retype", "tensor_drop", "tensor_retype", "tensor_add",
                     "role", "dtype", "axis", "block", "list", "model", "recipe", "version"])  # fmt: skip
    tensors = meta["tensors"]
    t = rng.choice(tensors)
    odd = rng.choice([None, "x", -1, 2**40, 1.5, [], {}, True, float("nan")])
    if op == "drop_key":
        meta.pop(rng.choice(list(meta)), None)
    elif op == "add_key":
        meta[rng.choice(["extra", "Tensors", "format2"])] = odd
    elif op == "retype":
        meta[rng.choice(list(meta))] = odd
    elif op == "tensor_drop":
        t.pop(rng.choice(list(t)), None)
    elif op == "tensor_retype":
        t[rng.choice(list(t))] = odd
    elif op == "tensor_add":
        t[rng.choice(["zp", "scales", "values"])] = odd
    elif op == "role":
        t["role"] = rng.choice(["weight", "activation", "bias", "float", "other"])
    elif op == "dtype":
        t["dtype"] = rng.choice(["int4", "uint4", "int8", "uint8", "int16", "int32", "float16",
                                 "float32", "int64", "x"])  # fmt: skip
    elif op == "axis":
        t["axis"] = rng.choice([None, 0, 1, 3, -1, -5, 99])
    elif op == "block":
        t["block"] = rng.choice([None, 0, 1, 3, 32, -8, 10**9])
    elif op == "list":
        return [meta], op
    elif op == "model":
        meta["model"] = rng.choice([{}, {"sha256": "0" * 64}, {"input_shapes": {"x": [0]}},
                                    {"input_values": {"x": "a"}}, {"sha256": 5}])  # fmt: skip
    elif op == "recipe":
        meta["recipe"] = rng.choice([{"recipe": {"weight_bits": 99}}, {"override": "x"},
                                     {"nonsense": 1}, {"recipe": []}])  # fmt: skip
    else:
        meta["version"] = rng.choice([0, 2, "1", None])
    return meta, op


def mutate_plan_arrays(arrays: dict[str, np.ndarray], rng: random.Random) -> str:
    with np.errstate(all="ignore"):  # odd values overflow their dtype on purpose
        return _mutate_plan_arrays(arrays, rng)


def _mutate_plan_arrays(arrays: dict[str, np.ndarray], rng: random.Random) -> str:
    key = rng.choice(sorted(arrays))
    op = rng.choice(["value", "dtype", "shape", "drop", "add", "scale_odd"])
    a = arrays[key]
    if op == "value":
        b = np.array(a, dtype=np.float64 if a.dtype.kind == "f" else np.int64, copy=True)
        b.flat[rng.randrange(max(b.size, 1))] = rng.choice(
            ODD_FLOATS if b.dtype.kind == "f" else ODD_INTS
        )
        arrays[key] = b.astype(a.dtype) if b.dtype.kind == "f" else b
    elif op == "dtype":
        arrays[key] = a.astype(rng.choice([np.float16, np.int8, np.uint64, np.complex64, np.bool_]))
    elif op == "shape":
        arrays[key] = rng.choice([a.reshape(-1)[:1], np.zeros((0,), a.dtype), np.concatenate([a.reshape(-1)] * 2),
                                  a.reshape(1, -1) if a.size else a])  # fmt: skip
    elif op == "drop":
        del arrays[key]
    elif op == "add":
        arrays[rng.choice(["t9999.scale", "evil", "t0.values2"])] = np.zeros(3)
    else:
        if key.endswith(".scale"):
            arrays[key] = np.full_like(a, rng.choice(ODD_FLOATS))
        else:
            return _mutate_plan_arrays(arrays, rng)
    return f"{op}:{key}"


def tar_members(tarball: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(tarball) as tf:
        return [(m, tf.extractfile(m).read() if m.isfile() else b"") for m in tf.getmembers()]  # type: ignore[union-attr]


def mutate_tar(members: list[tuple[tarfile.TarInfo, bytes]], rng: random.Random) -> tuple[list[tuple[tarfile.TarInfo, bytes]], str]:  # fmt: skip
    members = [(copy.copy(m), d) for m, d in members]
    op = rng.choice(["drop", "dup", "reorder", "rename", "retype", "payload", "size", "extra",
                     "manifest"])  # fmt: skip
    i = rng.randrange(len(members))
    m, d = members[i]
    if op == "drop":
        del members[i]
    elif op == "dup":
        members.insert(rng.randrange(len(members) + 1), (copy.copy(m), mutate_bytes(d, rng)[0]))
    elif op == "reorder":
        rng.shuffle(members)
    elif op == "rename":
        m.name = rng.choice(["/etc/x", "../x", "fw/../x", "other/model.tflite", "model.tflite",
                             "fw/sub/x", "fw/", "fw/manifest.json"])  # fmt: skip
    elif op == "retype":
        m.type = rng.choice([tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.DIRTYPE,
                             tarfile.FIFOTYPE, tarfile.GNUTYPE_SPARSE, tarfile.CONTTYPE])  # fmt: skip
        m.linkname = "/etc/passwd"
    elif op == "payload":
        members[i] = (m, mutate_bytes(d, rng)[0])
    elif op == "size":
        members[i] = (m, d + bytes(rng.choice([1, 512, 4096, 1 << 20])))
    elif op == "extra":
        members.append((tarfile.TarInfo(rng.choice(["fw/evil.sh", "evil.sh", "fw/.hidden"])), b"x"))
    else:
        meta = json.loads(members[0][1])
        meta, what = mutate_manifest(meta, rng)
        members[0] = (members[0][0], meta)
        return members, f"manifest:{what}"
    return members, op


def mutate_manifest(meta: dict[str, Any], rng: random.Random) -> tuple[bytes, str]:
    op = rng.choice(
        ["list", "empty_files", "sizes", "hash", "name", "utf8", "model", "sig", "format"]
    )
    meta = copy.deepcopy(meta)
    if op == "list":
        return b"[]", op
    if op == "utf8":
        return b"\xff\xfe" + json.dumps(meta).encode(), op
    if op == "empty_files":
        meta["files"], meta["sizes"] = {}, {}
    elif op == "sizes":
        k = rng.choice(list(meta["sizes"]))
        meta["sizes"][k] = rng.choice([-1, 0, 10**15, "12", None])
    elif op == "hash":
        k = rng.choice(list(meta["files"]))
        meta["files"][k] = rng.choice(["0" * 64, "xyz", None, 5])
    elif op == "name":
        meta["files"]["../../x"] = "0" * 64
        meta["sizes"]["../../x"] = 1
    elif op == "model":
        meta["model"] = rng.choice(["nope", None, 3])
    elif op == "sig":
        meta["signature"] = rng.choice([{}, "x", {"file": "../k", "algorithm": "ed25519"}])
    else:
        meta["format"] = "something-else"
    return json.dumps(meta).encode(), op


def write_tar(out: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(out, "w:gz", format=tarfile.GNU_FORMAT) as tf:
        for info, payload in members:
            info = copy.copy(info)
            regular = info.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
            info.size = len(payload) if regular else 0
            tf.addfile(info, io.BytesIO(payload) if regular else None)
    return out


# ------------------------------------------------------------------------- case generation
KINDS = {  # kind -> weight in a run
    "model-bytes": 14, "model-structure": 22, "model-prepare": 4, "model-run": 2,
    "calibration-data": 6, "plan-json": 12, "plan-arrays": 12, "plan-export": 4,
    "bundle-tar": 12, "bundle-folder": 6, "options": 6,
}  # fmt: skip


def generate(w: dict[str, Path], seed: int, count: int,
             weights: dict[str, int] | None = None) -> list[Case]:  # fmt: skip
    """`count` cases, the same for the same seed (each case also seeds its own mutations)."""
    weights = weights or KINDS
    rng = random.Random(seed)
    kinds = rng.choices(list(weights), weights=list(weights.values()), k=count)
    return [_case(i, kind, w, seed * 1_000_003 + i) for i, kind in enumerate(kinds)]


def _case(index: int, kind: str, w: dict[str, Path], case_seed: int) -> Case:
    rng = random.Random(case_seed)
    label: list[str] = [kind]

    def model_bytes(d: Path) -> Args:
        data, what = mutate_bytes(w["real"].read_bytes(), rng)
        label.append(what)
        (d / "m.onnx").write_bytes(data)
        return ["inspect", str(d / "m.onnx")]

    def model_structure(d: Path, then: Callable[[Path], Args]) -> Args:
        model = onnx.load(w["real"])
        for _ in range(rng.randint(1, 3)):
            label.append(mutate_model(model, rng))
        (d / "w.bin").write_bytes(bytes(64))
        (d / "m.onnx").write_bytes(model.SerializeToString())
        return then(d / "m.onnx")

    def calibration(d: Path) -> Args:
        data = d / "calib"
        shutil.copytree(w["calib"], data)
        victim = rng.choice(sorted(data.iterdir()))
        if rng.random() < 0.3:
            victim.unlink()
            victim = victim.with_suffix(".npz")
            payload, what = mutate_bytes(w["npz"].read_bytes(), rng)
        else:
            payload, what = mutate_bytes(victim.read_bytes(), rng)
        victim.write_bytes(payload)
        label.append(what)
        return ["calibrate", str(w["small"]), "--calib", str(data), "--target", "tflm",
                "--report-samples", "0", "-o", str(d / "plan")]  # fmt: skip

    def plan(d: Path, command: str) -> Args:
        p = d / "plan"
        shutil.copytree(w["plan"], p)
        if kind == "plan-json" or (kind == "plan-export" and rng.random() < 0.5):
            meta, what = mutate_plan_json(json.loads((p / "plan.json").read_text()), rng)
            text = json.dumps(meta)
            if rng.random() < 0.1:
                text = mutate_bytes(text.encode(), rng)[0].decode("latin-1")
            (p / "plan.json").write_text(text, encoding="latin-1")
        else:
            with np.load(p / "plan.npz") as f:
                arrays = {k: f[k] for k in f.files}
            what = mutate_plan_arrays(arrays, rng)
            np.savez(p / "plan.npz", **arrays)
            if rng.random() < 0.15:
                raw, what2 = mutate_bytes((p / "plan.npz").read_bytes(), rng)
                (p / "plan.npz").write_bytes(raw)
                what += "+" + what2
        label.append(what)
        if command == "report":
            return ["report", str(p)]
        return [
            "export",
            str(w["small"]),
            "--plan",
            str(p),
            "--target",
            "tflm",
            "--calib",  # measured: a tampered plan that passes the checks gets a verdict
            str(w["calib"]),
            "-o",
            str(d / "out"),
        ]

    def bundle_tar(d: Path) -> Args:
        if rng.random() < 0.35:
            data, what = mutate_bytes(w["tar"].read_bytes(), rng)
            (d / "fw.tar.gz").write_bytes(data)
        else:
            members, what = mutate_tar(tar_members(w["tar"]), rng)
            write_tar(d / "fw.tar.gz", members)
        label.append(what)
        return ["verify", str(d / "fw.tar.gz"), "--pubkey", str(w["pub"])]

    def bundle_folder(d: Path) -> Args:
        fw = d / "fw"
        shutil.copytree(w["bundle"], fw)
        names = sorted(p.name for p in fw.iterdir())
        op = rng.choice(["bytes", "drop", "extra", "link", "manifest", "dir"])
        name = rng.choice(names)
        if op == "bytes":
            (fw / name).write_bytes(mutate_bytes((fw / name).read_bytes(), rng)[0])
        elif op == "drop":
            (fw / name).unlink()
        elif op == "extra":
            (fw / rng.choice(["x.bin", ".hidden", "manifest.json.bak"])).write_bytes(b"x")
        elif op == "link":
            (fw / name).unlink()
            (fw / name).symlink_to(rng.choice(["/etc/passwd", "model.tflite", "/nonexistent"]))
        elif op == "manifest":
            payload, op = mutate_manifest(json.loads((fw / "manifest.json").read_text()), rng)
            (fw / "manifest.json").write_bytes(payload)
        else:
            (fw / name).unlink()
            (fw / name).mkdir()
        label.append(op)
        return ["verify", str(fw), "--pubkey", str(w["pub"])]

    def options(d: Path) -> Args:
        choices: list[Args] = [
            ["run", str(w["small"]), "--input-shape", rng.choice(["x=1,3,8", "x=0,3,8,8", "x=a", "y=1",
                                                                "x=1,3,8,8,", "=", "x=-1,3,8,8"])],
            ["export", str(w["small"]), "--target", rng.choice(["tflm", "nope", ""]), "--plan",
             str(w["plan"]), "--runs", str(rng.choice([0, -3, 1])), "-o", str(d / "o")],
            ["calibrate", str(w["small"]), "--calib", str(w["calib"]), "--calib-samples",
             str(rng.choice([0, -1, 1])), "--bits", str(rng.choice([3, 4, 8, 99])), "-o",
             str(d / rng.choice(["p", "", "."]))],
            ["devicetest", str(w["tflite"]), "--samples", str(rng.choice([0, 10**12, 1])), "--runs",
             str(rng.choice([0, 1])), "--out", str(d / "dt")],
            ["bundle", str(rng.choice([w["tflite"], w["small"], w["plan"]])), "-o",
             str(rng.choice([d / "b", w["small"], d]))],
            ["keygen", "-o", str(rng.choice([w["key"], d / "k.pem", d]))],
            ["report", str(rng.choice([w["plan"], w["small"], d])), "--top", str(rng.choice([0, -1, 5]))],
            ["check", str(rng.choice([w["small"], w["tflite"]])), "--target", rng.choice(["qnn", "rpi"])],
        ]  # fmt: skip
        args = rng.choice(choices)
        label.append(args[0])
        return args

    makers: dict[str, Callable[[Path], Args]] = {
        "model-bytes": model_bytes,
        "model-structure": lambda d: model_structure(d, lambda m: ["inspect", str(m)]),
        "model-prepare": lambda d: model_structure(
            d, lambda m: ["inspect", str(m), "--input-shape", "x=1,3,48,192"]),
        "model-run": lambda d: model_structure(
            d, lambda m: ["run", str(m), "--input-shape", "x=1,3,48,192"]),
        "calibration-data": calibration,
        "plan-json": lambda d: plan(d, "report"),
        "plan-arrays": lambda d: plan(d, "report"),
        "plan-export": lambda d: plan(d, "export"),
        "bundle-tar": bundle_tar,
        "bundle-folder": bundle_folder,
        "options": options,
    }  # fmt: skip

    def make(d: Path) -> Args:
        args = makers[kind](d)
        case.label = " ".join(label)
        return args

    case = Case(index, kind, kind, make)
    return case


# ------------------------------------------------------------------------- running
class _Hang(BaseException):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Hang()


def classify(exit_code: int | None, output: str, exception: BaseException | None) -> tuple[str, str]:  # fmt: skip
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    last = lines[-1][:300] if lines else ""
    if "Traceback" in output or (exception is not None and not isinstance(exception, SystemExit)):
        return "bad", f"{type(exception).__name__}: {exception}"[:300] if exception else last
    if exit_code == 0:
        return "ok", last
    if exit_code == 2 and len(errors) == 1 and lines[-1] == errors[0]:
        return (
            "refused (unexpected)" if errors[0].startswith("error: unexpected") else "refused"
        ), last
    if exit_code == 1 and not errors:
        return "exit 1", last
    return "bad", last


def run_case(case: Case, work: Path, timeout: float) -> Outcome:
    import logging

    from typer.testing import CliRunner

    from edgeq.cli import app

    # the CLI's logging.basicConfig binds the first CliRunner's stderr, closed afterwards: keep
    # log records out of the run (a real process has one stderr)
    logging.disable(logging.CRITICAL)

    d = work / f"case{case.index:05d}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    args = case.make(d)
    t0 = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        result = CliRunner().invoke(app, args)
        verdict, line = classify(result.exit_code, result.output, result.exception)
        code: int | None = result.exit_code
    except _Hang:
        verdict, line, code = "hang", f"over {timeout:g} s", None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    seconds = time.perf_counter() - t0
    shutil.rmtree(d, ignore_errors=True)
    return Outcome(case.index, case.kind, case.label, verdict, code, round(seconds, 3), line)


def run_cases(cases: list[Case], work: Path, timeout: float, budget_s: float | None = None,
              on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:  # fmt: skip
    """Run in this process (a crash ends it), stopping early once `budget_s` is spent."""
    import logging

    outcomes = []
    t0 = time.perf_counter()
    try:
        for case in cases:
            if budget_s is not None and time.perf_counter() - t0 > budget_s:
                break
            outcome = run_case(case, work, timeout)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    finally:
        logging.disable(logging.NOTSET)
    return outcomes


# ------------------------------------------------------------------------- the benchmark
def _worker(seed: int, count: int, start: int, timeout: float, work: Path) -> None:
    """Run cases start.. of the seeded list, one JSON line per case on stdout."""
    w = json.loads((work / "workspace.json").read_text())
    cases = generate({k: Path(v) for k, v in w.items()}, seed, count)[start:]
    for case in cases:
        print(json.dumps({"start": case.index}), flush=True)
        out = run_case(case, work / "cases", timeout)
        print(json.dumps(asdict(out)), flush=True)


def benchmark(count: int, seed: int, timeout: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="edgeq-fuzz-"))
    try:
        w = build_workspace(work / "workspace")
        (work / "workspace.json").write_text(json.dumps({k: str(v) for k, v in w.items()}))
        cases = generate(w, seed, count)
        outcomes: dict[int, dict[str, Any]] = {}
        start, t0 = 0, time.perf_counter()
        while start < count:
            cmd = [sys.executable, "-m", "benchmarks.fuzz", "--worker", "--seed", str(seed),
                   "--cases", str(count), "--start", str(start), "--timeout", str(timeout),
                   "--work", str(work)]  # fmt: skip
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True, cwd=Path(__file__).resolve().parents[1])  # fmt: skip
            current = start
            assert proc.stdout is not None
            for line in proc.stdout:
                msg = json.loads(line)
                if "start" in msg:
                    current = msg["start"]
                else:
                    outcomes[msg["index"]] = msg
                    if len(outcomes) % 50 == 0:
                        print(f"{len(outcomes)}/{count} cases, {time.perf_counter() - t0:.0f} s",
                              file=sys.stderr, flush=True)  # fmt: skip
            proc.wait()
            if current not in outcomes:  # the worker died in this case: a crash
                c = cases[current]
                outcomes[current] = asdict(Outcome(c.index, c.kind, c.label, "crash",
                                                   proc.returncode, 0.0, f"exit {proc.returncode}"))  # fmt: skip
            start = max(outcomes) + 1
        elapsed = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [outcomes[i] for i in sorted(outcomes)]
    return {"seed": seed, "cases": len(rows), "seconds": round(elapsed, 1), "timeout_s": timeout,
            "verdicts": dict(Counter(r["verdict"] for r in rows)),
            "by_kind": {k: dict(Counter(r["verdict"] for r in rows if r["kind"] == k)) for k in KINDS},
            "not_clean": [r for r in rows if r["verdict"] in ("bad", "hang", "crash")],
            "unexpected": [r for r in rows if r["verdict"] == "refused (unexpected)"],
            "slowest": sorted(rows, key=lambda r: -r["seconds"])[:5]}  # fmt: skip


def markdown(res: dict[str, Any], command: str) -> str:
    from benchmarks.common import md_table

    verdicts = ["ok", "refused", "refused (unexpected)", "exit 1", "bad", "hang", "crash"]
    rows = [{"kind": k, **{v: c.get(v, 0) for v in verdicts}, "total": sum(c.values())}
            for k, c in res["by_kind"].items()]  # fmt: skip
    rows.append({"kind": "**all**", **{v: res["verdicts"].get(v, 0) for v in verdicts},
                 "total": res["cases"]})  # fmt: skip
    text = [f"# Fuzzing the edgeq CLI (issue #17)\n\n`{command}` — {res['cases']} cases, seed "
            f"{res['seed']}, {res['seconds']} s, per-case limit {res['timeout_s']} s, "
            f"{res['machine']}, {res['date']}\n",
            md_table(rows, ["kind", *verdicts, "total"]),
            "\n`refused`: one line `error: … — …`, exit 2, from edgeq's checks. `refused "
            "(unexpected)`: one clean line from the CLI's last-resort handler (an error type "
            "edgeq did not anticipate). `bad`/`hang`/`crash` must be 0.\n"]  # fmt: skip
    for title, key in (("Not clean", "not_clean"), ("Unexpected error types", "unexpected")):
        if res[key]:
            text.append(f"\n## {title}\n")
            text += [f"- #{r['index']} {r['label']}: {r['line']}" for r in res[key][:30]]
    text.append("\n## Slowest cases\n")
    text += [
        f"- #{r['index']} {r['label']}: {r['seconds']} s ({r['verdict']})" for r in res["slowest"]
    ]
    return "\n".join(text) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("EDGEQ_CACHE_DIR", "off")
    if args.worker:
        _worker(args.seed, args.cases, args.start, args.timeout, args.work)
        return
    from benchmarks.common import machine, write_results

    res = benchmark(args.cases, args.seed, args.timeout)
    res["machine"] = machine()
    res["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = f"python -m benchmarks.fuzz --cases {args.cases} --seed {args.seed}"
    _, md_path = write_results("fuzz", res, markdown(res, command))
    print(f"{res['verdicts']} -> {md_path}")


if __name__ == "__main__":
    main()
