#!/usr/bin/env python3
"""edgeq device runner: shipped next to an artifact and runs on the device.

Standalone on purpose: stdlib + numpy + whichever runtime the device has (onnxruntime for .onnx;
ai_edge_litert, tflite_runtime or tensorflow for .tflite; coremltools for .mlpackage/.mlmodelc on
macOS). It imports edgeq only for the two artifact kinds that only edgeq can run, and only when
edgeq is installed on the device (`pip install 'edgeq[mlx]'`): an MLX artifact folder (config.json
+ graph.json + model.safetensors, run by edgeq.exporters.mlx.runtime with MLX), and a .mlpackage
on a machine that is not a Mac (run by edgeq's numpy MIL evaluator: a check of the file, not Core
ML; its timings are reported as "device_latency": false).

    python3 remote_runner.py JOB.json          run the job, write outputs (.npz) and result (JSON)
    python3 remote_runner.py --describe MODEL  print the artifact's inputs/outputs as JSON

JOB.json (paths relative to the job file's folder)::

    {"artifact": "model.tflite", "runtime": "auto", "inputs": "inputs.npz",
     "samples": [{"x": "s0_0"}],            # graph input name -> array key in inputs.npz
     "io": {"inputs": [{"name": "x", "artifact_name": "x", "perm": [0, 2, 3, 1]}],
            "outputs": [{"name": "y", "artifact_name": "y", "perm": null}]},
     "rounding": "half_away", "runs": 50, "warmup": 5, "threads": null,
     "outputs": "outputs.npz", "result": "result.json", "pause_s": 0,
     "compute_plan": false, "compute_units": "ALL"}

Feeds are in the graph's layout; `perm` transposes an input into the artifact's layout (and an
artifact output back into the graph's). Quantized (integer) TFLite inputs are quantized with the
tensor's scale/zero point and integer outputs dequantized. The timed loop runs sample 0: set
inputs + invoke + read outputs; I/O (de)quantization and transposes happen outside the timer.
Exit status: 0 ok, 2 bad job or missing runtime, 3 runtime failure.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RUNNER_VERSION = 2
MLX_FILES = ("config.json", "graph.json", "model.safetensors")
COREML_EVAL_RUNTIME = "numpy MIL evaluator (not Core ML; Core ML needs macOS)"


class RunnerError(Exception):
    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _np_dtype(name: str) -> Any:
    table = {
        "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
        "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
        "tensor(uint8)": np.uint8, "tensor(int16)": np.int16, "tensor(uint16)": np.uint16,
        "tensor(bool)": np.bool_,
    }  # fmt: skip
    return table.get(name, np.float32)


def _round(x: np.ndarray, mode: str) -> np.ndarray:
    if mode == "half_even":
        return np.round(x)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


# ---------------------------------------------------------------- backends
class Backend:
    runtime = ""
    version = ""
    device_latency = True  # False: the timings are of a stand-in, not of the device's runtime

    def inputs(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def outputs(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def to_artifact(self, name: str, value: np.ndarray, rounding: str) -> np.ndarray:
        return value

    def from_artifact(self, name: str, value: np.ndarray) -> np.ndarray:
        return np.asarray(value, np.float32)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


class OrtBackend(Backend):
    def __init__(self, path: Path, threads: int | None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RunnerError(f"onnxruntime is not installed on this device ({exc})") from exc
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.runtime, self.version = "onnxruntime", ort.__version__
        self._types = {i.name: _np_dtype(i.type) for i in self.session.get_inputs()}

    def inputs(self) -> list[dict[str, Any]]:
        return [{"name": i.name, "shape": list(i.shape), "dtype": np.dtype(_np_dtype(i.type)).name}
                for i in self.session.get_inputs()]  # fmt: skip

    def outputs(self) -> list[dict[str, Any]]:
        return [{"name": o.name, "shape": list(o.shape), "dtype": np.dtype(_np_dtype(o.type)).name}
                for o in self.session.get_outputs()]  # fmt: skip

    def to_artifact(self, name: str, value: np.ndarray, rounding: str) -> np.ndarray:
        return np.ascontiguousarray(value, dtype=self._types.get(name, value.dtype))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, feeds)
        return {name: values[i] for i, name in enumerate(names)}


def _tflite_interpreter_class() -> tuple[Any, str, str]:
    try:
        from ai_edge_litert import interpreter as litert

        version = getattr(sys.modules.get("ai_edge_litert"), "__version__", "")
        return litert.Interpreter, "ai_edge_litert", version
    except ImportError:
        pass
    try:
        import tflite_runtime
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite_runtime", getattr(tflite_runtime, "__version__", "")
    except ImportError:
        pass
    try:
        import tensorflow as tf

        return tf.lite.Interpreter, "tensorflow.lite", tf.__version__
    except ImportError as exc:
        raise RunnerError(
            "no TFLite runtime on this device: pip install ai-edge-litert (or tflite-runtime)"
        ) from exc


class TfliteBackend(Backend):
    def __init__(self, path: Path, threads: int | None) -> None:
        cls, self.runtime, self.version = _tflite_interpreter_class()
        kwargs: dict[str, Any] = {"model_path": str(path)}
        if threads:
            kwargs["num_threads"] = int(threads)
        self.interp = cls(**kwargs)
        self.interp.allocate_tensors()
        self._in = {d["name"]: d for d in self.interp.get_input_details()}
        self._out = {d["name"]: d for d in self.interp.get_output_details()}

    @staticmethod
    def _describe(d: dict[str, Any]) -> dict[str, Any]:
        q = d.get("quantization_parameters", {})
        scales = [float(s) for s in np.asarray(q.get("scales", [])).ravel()]
        zps = [int(z) for z in np.asarray(q.get("zero_points", [])).ravel()]
        return {"name": d["name"], "shape": [int(s) for s in d["shape"]],
                "dtype": np.dtype(d["dtype"]).name, "scale": scales, "zero_point": zps}  # fmt: skip

    def inputs(self) -> list[dict[str, Any]]:
        return [self._describe(d) for d in self._in.values()]

    def outputs(self) -> list[dict[str, Any]]:
        return [self._describe(d) for d in self._out.values()]

    @staticmethod
    def _qparams(d: dict[str, Any]) -> tuple[float, int] | None:
        q = d.get("quantization_parameters", {})
        scales = np.asarray(q.get("scales", [])).ravel()
        if scales.size == 0 or not np.issubdtype(np.dtype(d["dtype"]), np.integer):
            return None
        zps = np.asarray(q.get("zero_points", [0])).ravel()
        return float(scales[0]), int(zps[0]) if zps.size else 0

    def to_artifact(self, name: str, value: np.ndarray, rounding: str) -> np.ndarray:
        d = self._in[name]
        dtype = np.dtype(d["dtype"])
        qp = self._qparams(d)
        if qp is not None and np.issubdtype(np.asarray(value).dtype, np.floating):
            info = np.iinfo(dtype)
            q = _round(np.asarray(value, np.float64) / qp[0], rounding) + qp[1]
            return np.clip(q, info.min, info.max).astype(dtype)
        return np.ascontiguousarray(value, dtype=dtype)

    def from_artifact(self, name: str, value: np.ndarray) -> np.ndarray:
        qp = self._qparams(self._out[name])
        if qp is None:
            return np.asarray(value, np.float32)
        return ((np.asarray(value, np.float64) - qp[1]) * qp[0]).astype(np.float32)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, value in feeds.items():
            self.interp.set_tensor(self._in[name]["index"], value)
        self.interp.invoke()
        return {n: self.interp.get_tensor(d["index"]) for n, d in self._out.items()}


class _CoremlSpecBackend(Backend):
    """Inputs/outputs from a Core ML model spec (shared by the Core ML and MIL-evaluator runs)."""

    def _describe_spec(self, spec: Any) -> None:
        self._in_desc = [_coreml_feature(f) for f in spec.description.input]
        self._out_desc = [_coreml_feature(f) for f in spec.description.output]

    def inputs(self) -> list[dict[str, Any]]:
        return self._in_desc

    def outputs(self) -> list[dict[str, Any]]:
        return self._out_desc

    def to_artifact(self, name: str, value: np.ndarray, rounding: str) -> np.ndarray:
        dtype = next((d["dtype"] for d in self._in_desc if d["name"] == name), "float32")
        return np.ascontiguousarray(value, dtype=dtype)


class CoremlBackend(_CoremlSpecBackend):
    def __init__(self, path: Path, compute_units: str, spec_path: Path | None) -> None:
        try:
            import coremltools as ct
        except ImportError as exc:
            raise RunnerError("coremltools is not installed: pip install coremltools") from exc
        self.runtime, self.version = "coremltools", ct.__version__
        units = getattr(ct.ComputeUnit, compute_units, ct.ComputeUnit.ALL)
        spec_src = spec_path or path
        spec = ct.models.MLModel(str(spec_src), skip_model_load=True).get_spec()
        self._describe_spec(spec)
        if path.suffix == ".mlmodelc":
            self.model = ct.models.CompiledMLModel(str(path), compute_units=units)
        else:
            self.model = ct.models.MLModel(str(path), compute_units=units)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.model.predict(feeds).items()}


def _edgeq_module(name: str, what: str) -> Any:
    """An edgeq module on the device, or a RunnerError saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise RunnerError(f"{what} needs edgeq with MLX on the device ({exc}): "
                          "pip install 'edgeq[mlx]' there (or pass --remote-python to a python "
                          "that has it)") from exc  # fmt: skip


def is_mlx_artifact(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in MLX_FILES)


def mlx_io(path: Path) -> dict[str, list[dict[str, Any]]]:
    """An MLX artifact's I/O from its graph.json (no MLX needed); output shapes may be None."""
    try:
        graph = json.loads((path / "graph.json").read_text())
        ins = [{"name": v["name"], "shape": [int(d) for d in v["shape"]],
                "dtype": np.dtype(v.get("dtype", "float32")).name}
               for v in graph["inputs"]]  # fmt: skip
        outs = [{"name": v["name"], "dtype": "float32",
                 "shape": [int(d) for d in v["shape"]] if v.get("shape") else None}
                for v in graph["outputs"]]  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunnerError(f"'{path.name}/graph.json' is not an edgeq MLX graph ({exc!r})") from exc
    return {"inputs": ins, "outputs": outs}


class MlxBackend(Backend):
    """An edgeq MLX artifact folder, run by edgeq's MLX runtime (MLX on the CPU)."""

    def __init__(self, path: Path) -> None:
        runtime = _edgeq_module("edgeq.exporters.mlx.runtime", "an MLX artifact")
        import mlx.core as mx

        self.program = runtime.MlxProgram(path)
        self.runtime, self.version = "mlx", getattr(mx, "__version__", "")
        self.device = str(mx.default_device())
        self._io = mlx_io(path)

    def inputs(self) -> list[dict[str, Any]]:
        return self._io["inputs"]

    def outputs(self) -> list[dict[str, Any]]:
        return self._io["outputs"]

    def to_artifact(self, name: str, value: np.ndarray, rounding: str) -> np.ndarray:
        dtype = next((d["dtype"] for d in self._io["inputs"] if d["name"] == name), "float32")
        return np.ascontiguousarray(value, dtype=dtype)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.program(feeds)  # evaluates (mx.eval) before returning numpy arrays


class CoremlEvalBackend(_CoremlSpecBackend):
    """A .mlpackage where there is no Core ML (not macOS): edgeq's numpy evaluator of the saved
    ML program. It checks the file; it is not Core ML and its timings are no device latency."""

    device_latency = False

    def __init__(self, path: Path) -> None:
        ev = _edgeq_module("edgeq.exporters.coreml.evaluate", "a .mlpackage off macOS")
        if path.suffix != ".mlpackage":
            raise RunnerError(f"'{path.name}' needs Core ML (macOS); off macOS only .mlpackage "
                              "files run, in edgeq's numpy MIL evaluator")  # fmt: skip
        self.evaluator = ev.MILProgramEvaluator(path)
        spec = self.evaluator.prog.spec
        self.runtime = COREML_EVAL_RUNTIME
        self.version = getattr(sys.modules.get("edgeq"), "__version__", "")
        self._describe_spec(spec)

    def from_artifact(self, name: str, value: np.ndarray) -> np.ndarray:
        shape = next((d["shape"] for d in self._out_desc if d["name"] == name), None)
        value = np.asarray(value, np.float32)
        return value.reshape(shape) if shape and int(np.prod(shape)) == value.size else value

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.evaluator(feeds)


def _coreml_feature(f: Any) -> dict[str, Any]:
    arr = f.type.multiArrayType
    dtype = {65568: "float32", 65552: "float16", 131104: "int32", 65600: "float64"}.get(
        int(arr.dataType), "float32"
    )
    return {"name": f.name, "shape": [int(s) for s in arr.shape], "dtype": dtype}


def open_backend(path: Path, runtime: str = "auto", threads: int | None = None,
                 compute_units: str = "ALL", spec_path: Path | None = None) -> Backend:  # fmt: skip
    if not path.exists():
        raise RunnerError(f"artifact '{path.name}' is not on the device")
    kind = runtime
    if kind == "auto":
        kind = {".onnx": "onnxruntime", ".tflite": "tflite", ".mlpackage": "coreml",
                ".mlmodelc": "coreml", ".mlmodel": "coreml"}.get(path.suffix, "")  # fmt: skip
        if is_mlx_artifact(path):
            kind = "mlx"
        elif kind == "coreml" and sys.platform != "darwin":
            kind = "coreml-eval"
    if kind == "onnxruntime":
        return OrtBackend(path, threads)
    if kind == "tflite":
        return TfliteBackend(path, threads)
    if kind == "coreml":
        return CoremlBackend(path, compute_units, spec_path)
    if kind == "coreml-eval":
        return CoremlEvalBackend(path)
    if kind == "mlx":
        return MlxBackend(path)
    raise RunnerError(f"no runner for '{path.name}' (runs .onnx, .tflite, .mlpackage, .mlmodelc "
                      "and MLX artifact folders)")  # fmt: skip


# ---------------------------------------------------------------- job
def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _compute_plan(path: Path, compute_units: str) -> dict[str, Any]:
    """Where each ML program op runs (macOS 14.4+, coremltools 8+)."""
    import coremltools as ct
    from coremltools.models.compute_plan import MLComputePlan

    units = getattr(ct.ComputeUnit, compute_units, ct.ComputeUnit.ALL)
    plan = MLComputePlan.load_from_path(path=str(path), compute_units=units)
    program = plan.model_structure.program
    if program is None:
        return {"error": "not an ML program"}
    counts: dict[str, int] = {}
    ops: list[dict[str, str]] = []
    for fname, function in program.functions.items():
        for op in function.block.operations:
            usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
            device = type(usage.preferred_compute_device).__name__ if usage else "none"
            device = device.replace("ML", "").replace("ComputeDevice", "") or device
            counts[device] = counts.get(device, 0) + 1
            ops.append({"function": fname, "op": op.operator_name, "device": device})
    return {"device_counts": counts, "operations": ops}


def run_job(job_path: Path) -> dict[str, Any]:
    job = json.loads(job_path.read_text())
    base = job_path.parent
    (base / job.get("pid_file", "runner.pid")).write_text(str(os.getpid()))
    if float(job.get("pause_s", 0)) > 0:  # test hook: lets a test kill the runner mid-run
        time.sleep(float(job["pause_s"]))
    artifact = base / job["artifact"]
    spec_path = base / job["spec_artifact"] if job.get("spec_artifact") else None
    t0 = time.perf_counter()
    backend = open_backend(artifact, job.get("runtime", "auto"), job.get("threads"),
                           job.get("compute_units", "ALL"), spec_path)  # fmt: skip
    load_ms = (time.perf_counter() - t0) * 1e3
    io = job.get("io") or {}
    in_map = io.get("inputs") or [{"name": d["name"], "artifact_name": d["name"], "perm": None}
                                  for d in backend.inputs()]  # fmt: skip
    out_map = io.get("outputs") or [{"name": d["name"], "artifact_name": d["name"], "perm": None}
                                    for d in backend.outputs()]  # fmt: skip
    rounding = job.get("rounding", "half_away")
    with np.load(base / job["inputs"], allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    samples = []
    for sample in job["samples"]:
        feeds = {}
        for m in in_map:
            value = arrays[sample[m["name"]]]
            if m.get("perm"):
                value = np.transpose(value, m["perm"])
            feeds[m["artifact_name"]] = backend.to_artifact(m["artifact_name"], value, rounding)
        samples.append(feeds)
    if not samples:
        raise RunnerError("the job has no input samples")
    outputs: dict[str, np.ndarray] = {}
    try:
        for i, feeds in enumerate(samples):
            raw = backend.run(feeds)
            for j, m in enumerate(out_map):
                if m["artifact_name"] not in raw:
                    raise RunnerError(f"the artifact has no output '{m['artifact_name']}'")
                value = backend.from_artifact(m["artifact_name"], raw[m["artifact_name"]])
                if m.get("perm"):
                    value = np.transpose(value, m["perm"])
                outputs[f"s{i}_{j}"] = np.ascontiguousarray(value, np.float32)
        for _ in range(int(job.get("warmup", 3))):
            backend.run(samples[0])
        times = []
        for _ in range(int(job.get("runs", 50))):
            t = time.perf_counter()
            backend.run(samples[0])
            times.append((time.perf_counter() - t) * 1e3)
    except RunnerError:
        raise
    except Exception as exc:
        raise RunnerError(f"{backend.runtime} failed to run '{artifact.name}': {exc}", 3) from exc
    times.sort()
    latency = {"runs": len(times), "warmup": int(job.get("warmup", 3)), "load_ms": load_ms}
    if times:
        latency.update({
            "p50_ms": float(np.percentile(times, 50)), "p90_ms": float(np.percentile(times, 90)),
            "mean_ms": float(np.mean(times)), "min_ms": times[0], "max_ms": times[-1],
        })  # fmt: skip
    result: dict[str, Any] = {
        "status": "ok",
        "runner_version": RUNNER_VERSION,
        "runtime": backend.runtime,
        "runtime_version": backend.version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "samples": len(samples),
        "outputs": [m["name"] for m in out_map],
        "latency": latency,
        "timed": "set inputs + invoke + read outputs on sample 0",
        "device_latency": backend.device_latency,
    }
    if isinstance(backend, MlxBackend):
        result["mlx_device"] = backend.device
    if job.get("compute_plan") and isinstance(backend, CoremlBackend):
        try:
            result["compute_plan"] = _compute_plan(artifact, job.get("compute_units", "ALL"))
        except Exception as exc:
            result["compute_plan"] = {"error": f"{type(exc).__name__}: {exc}"}
    import io as _io

    buf = _io.BytesIO()
    np.savez(buf, **outputs)
    _write_atomic(base / job.get("outputs", "outputs.npz"), buf.getvalue())
    _write_atomic(base / job.get("result", "result.json"), json.dumps(result).encode())
    return result


def describe(path: Path) -> dict[str, Any]:
    if is_mlx_artifact(path):  # from graph.json: no MLX needed to read the I/O
        return {"runtime": "mlx", **mlx_io(path)}
    backend = open_backend(path)
    return {"runtime": backend.runtime, "inputs": backend.inputs(), "outputs": backend.outputs()}


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 2 and argv[0] == "--describe":
            sys.stdout.write(json.dumps(describe(Path(argv[1]))) + "\n")
            return 0
        if len(argv) != 1:
            raise RunnerError("usage: remote_runner.py JOB.json | --describe MODEL")
        run_job(Path(argv[0]))
        return 0
    except RunnerError as exc:
        sys.stderr.write(f"edgeq-runner: error: {exc}\n")
        return exc.code
    except (OSError, ValueError, KeyError) as exc:
        sys.stderr.write(f"edgeq-runner: error: {type(exc).__name__}: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
