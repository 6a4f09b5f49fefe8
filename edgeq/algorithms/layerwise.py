"""Layer by layer through a partially quantized network: the calibration path of GPTQ-style
algorithms.

Layers are solved in graph order. Before layer j is solved, the calibration samples have run
through every node before it with layers 1..j-1 already quantized (and the plan's activation
quantization applied), so layer j's input statistics (its Hessian) see the errors of the
layers before it — GPTQ's sequential mode, for any graph, not only stacks of blocks.

The samples are not re-run from the input for every layer: the graph is cut into segments at
the solved layers whose input is not yet computed (layers reading one tensor, such as Q/K/V
projections, are solved one after the other with no segment between them), and only the
tensors still needed later (the live cut) are kept, per chunk of samples, between segments. Each
segment is one jitted, vmapped function whose weights (and the scales and zero points of the
activations it fake-quantizes, `FakeQuant`) are arguments, so segments of one structure (a
transformer's blocks) share one compiled program.
Kept chunks spill to a temporary folder above `spill_bytes`, so resident memory stays flat in
the number of samples; only one layer's Hessian is held at a time (two layers reading the
same tensor, such as Q/K/V projections, share it).

Pure with respect to formats: (graph, constants, feeds, solve) → solved weights.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from edgeq.ir.graph import Graph, Node, node_inputs_all
from edgeq.ir.interpreter import run_node, trace
from edgeq.ir.jit import jit
from edgeq.quant.calibrate import _mask_padding
from edgeq.quant.plan import TensorQuant
from edgeq.quant.qtypes import fake_quant
from edgeq.quant.statistics import ConvInputHessian, InputHessian

log = logging.getLogger(__name__)
Feeds = Mapping[str, np.ndarray]
Transform = Callable[[str, Any], Any]


@dataclass(frozen=True)
class FakeQuant:
    """The simulator's activation quantization as a transform: each tensor of `tensors`
    quantized and dequantized by name. Segments of one structure still share a compiled
    program with it (its scales and zero points become arguments); any other callable
    transform makes each segment compile its own."""

    tensors: Mapping[str, TensorQuant]
    rounding: str = "half_even"

    def __call__(self, name: str, value: Any) -> Any:
        t = self.tensors.get(name)
        return value if t is None else t.fake_quant(value, self.rounding)


@dataclass(frozen=True)
class LayerJob:
    """A layer whose weight is solved from the Hessian of its data input."""

    index: int  # position in graph.nodes
    node: str
    weight: str
    data: str
    statistic: InputHessian | ConvInputHessian

    @property
    def groups(self) -> int:
        return self.statistic.groups if isinstance(self.statistic, ConvInputHessian) else 1


def layer_job(graph: Graph, index: int) -> LayerJob | None:
    """The job of node `index` if its weight can be solved from an input Hessian: MatMul with a
    constant 2-D weight, Gemm (transA=0), 2-D Conv (explicit pads); otherwise None."""
    node = graph.nodes[index]
    consts = graph.constants
    ins = node.inputs
    if node.op_type == "MatMul" and len(ins) == 2 and ins[1] in consts and consts[ins[1]].ndim == 2:
        return LayerJob(
            index, node.name, ins[1], ins[0], InputHessian(int(consts[ins[1]].shape[0]))
        )
    if (
        node.op_type == "Gemm"
        and len(ins) >= 2
        and ins[1] in consts
        and not node.attrs.get("transA", 0)
    ):
        w = consts[ins[1]]
        k = int(w.shape[1] if node.attrs.get("transB", 0) else w.shape[0])
        return LayerJob(index, node.name, ins[1], ins[0], InputHessian(k))
    if node.op_type == "Conv" and len(ins) >= 2 and ins[1] in consts and consts[ins[1]].ndim == 4:
        if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            return None
        w = consts[ins[1]]
        groups = int(node.attrs.get("group", 1))
        pads = tuple(int(p) for p in node.attrs.get("pads", (0, 0, 0, 0)))
        stat = ConvInputHessian(
            channels=int(w.shape[1]) * groups, kernel=(int(w.shape[2]), int(w.shape[3])),
            strides=tuple(int(s) for s in node.attrs.get("strides", (1, 1))),  # type: ignore[arg-type]
            pads=pads,  # type: ignore[arg-type]
            dilations=tuple(int(d) for d in node.attrs.get("dilations", (1, 1))),  # type: ignore[arg-type]
            groups=groups,
        )  # fmt: skip
        return LayerJob(index, node.name, ins[1], ins[0], stat)
    return None


class ChunkStore:
    """Per-tensor lists of sample chunks; chunks spill to .npy files above `spill_bytes`."""

    def __init__(self, spill_bytes: int) -> None:
        self.spill_bytes = spill_bytes
        self.in_memory = 0
        self.spilled = 0
        self._chunks: dict[str, list[np.ndarray | Path]] = {}
        self._dir: Path | None = None

    def put(self, name: str, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk)
        items = self._chunks.setdefault(name, [])
        if self.in_memory + chunk.nbytes <= self.spill_bytes:
            items.append(chunk)
            self.in_memory += chunk.nbytes
            return
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="edgeq-layerwise-"))
        path = self._dir / f"{len(list(self._dir.iterdir()))}.npy"
        np.save(path, chunk)
        self.spilled += chunk.nbytes
        items.append(path)

    def get(self, name: str, i: int) -> np.ndarray:
        item = self._chunks[name][i]
        return np.load(item) if isinstance(item, Path) else item

    def __contains__(self, name: str) -> bool:
        return name in self._chunks

    def names(self) -> list[str]:
        return list(self._chunks)

    def drop(self, name: str) -> None:
        for item in self._chunks.pop(name, []):
            if isinstance(item, Path):
                item.unlink(missing_ok=True)
            else:
                self.in_memory -= item.nbytes

    def close(self) -> None:
        for name in list(self._chunks):
            self.drop(name)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


@dataclass
class LayerwiseResult:
    seconds: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    spilled_bytes: int = 0
    kept_bytes: int = 0
    segments: int = 0  # forward segments run
    programs: int = 0  # distinct compiled programs they shared (0: none shared)


def _chunks(
    feeds: Iterable[Feeds], size: int
) -> Iterable[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Stacked chunks of exactly `size` samples (the last one padded by repeating its first
    sample) and the 0/1 weight of every row."""
    batch: list[Feeds] = []
    for feed in feeds:
        batch.append(feed)
        if len(batch) == size:
            yield (
                {k: np.stack([np.asarray(f[k]) for f in batch]) for k in batch[0]},
                np.ones(size, np.float32),
            )
            batch = []
    if batch:
        n = len(batch)
        batch += [batch[0]] * (size - n)
        weight = np.zeros(size, np.float32)
        weight[:n] = 1.0
        yield {k: np.stack([np.asarray(f[k]) for f in batch]) for k in batch[0]}, weight


def run_layerwise(
    graph: Graph,
    jobs: Sequence[LayerJob],
    feeds: Iterable[Feeds],
    solve: Callable[[LayerJob, np.ndarray, Callable[[str, np.ndarray], None]], np.ndarray],
    *,
    weights: Mapping[str, np.ndarray] | None = None,
    transform: Transform | None = None,
    chunk: int = 8,
    token_mask: str | None = None,
    spill_bytes: int = 256 << 20,
    progress: Callable[[int, int], None] | None = None,
) -> LayerwiseResult:
    """Run `feeds` through `graph` layer by layer. For each job (in graph order), its input
    Hessian (finalized mean) is computed from the samples as they arrive through the already
    solved layers, then `solve(job, H, rescale)` returns the weight (graph layout, float) that
    the following layers see. `rescale(tensor, factor)` lets a solver divide a kept tensor by
    a per-channel factor (a scale folded into its producer). `weights` overrides constants
    from the start (the plan's other quantized weights); `transform` fake-quantizes
    activations (the simulator's)."""
    result = LayerwiseResult()
    t_start = time.perf_counter()
    jobs = sorted(jobs, key=lambda j: j.index)
    if not jobs:
        return result
    consts: dict[str, Any] = dict(graph.constants)
    consts.update(weights or {})
    with jax.enable_x64(True):
        consts.update(trace(graph).concrete)
    nodes = graph.nodes
    last_job = jobs[-1].index
    last_use: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for name in node_inputs_all(node):
            last_use[name] = i
    seq = 0
    if token_mask:
        info = graph.info(token_mask)
        seq = int(info.shape[-1]) if info is not None and info.shape else 0  # type: ignore[arg-type]
    store = ChunkStore(spill_bytes)
    programs: dict[Any, Any] = {}  # compiled segments by structure (see `_shared_program`)
    row_weights: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    seconds = {"forward": 0.0, "hessian": 0.0, "solve": 0.0, "compile_and_load": 0.0}
    try:
        t0 = time.perf_counter()
        for batch, w in _chunks(feeds, chunk):
            for v in graph.inputs:
                if v.name in batch and last_use.get(v.name, -1) >= 0:
                    x = batch[v.name]
                    if transform is not None and np.issubdtype(x.dtype, np.floating):
                        x = np.asarray(jax.vmap(lambda a, n=v.name: transform(n, a))(x))
                    store.put(v.name, x)
            if token_mask:
                masks.append(np.asarray(batch[token_mask]))
            row_weights.append(w)
            result.samples += int(w.sum())
        n_chunks = len(row_weights)
        seconds["compile_and_load"] += time.perf_counter() - t0
        if n_chunks == 0:
            return result
        start = 0
        cached: tuple[str, np.ndarray] | None = None
        for k, job in enumerate(jobs):
            t0 = time.perf_counter()
            if job.data not in store:  # else (Q/K/V reading one tensor) solve it right away:
                # the nodes since `start` run later in one segment, with this weight solved
                _run_segment(nodes[start : job.index], graph, consts, store, last_use, job.index,
                             last_job, n_chunks, transform, programs)  # fmt: skip
                result.segments += 1
                for name in store.names():
                    if last_use.get(name, -1) < job.index and name != token_mask:
                        store.drop(name)
                start = job.index
            seconds["forward"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            if cached is None or cached[0] != job.data:
                cached = (job.data, _hessian(job, store, n_chunks, row_weights, masks, seq))
            seconds["hessian"] += time.perf_counter() - t0
            t0 = time.perf_counter()

            def rescale(name: str, factor: np.ndarray, job: LayerJob = job) -> None:
                _rescale(store, name, factor, n_chunks, job, graph)
                nonlocal cached
                cached = None

            consts[job.weight] = solve(job, cached[1], rescale)
            seconds["solve"] += time.perf_counter() - t0
            if progress is not None:
                progress(k + 1, len(jobs))
            result.kept_bytes = max(result.kept_bytes, store.in_memory)
        result.spilled_bytes = store.spilled
        result.programs = len(programs)
    finally:
        store.close()
    seconds["total"] = time.perf_counter() - t_start
    result.seconds = {k: round(v, 3) for k, v in seconds.items()}
    return result


def _rescale(store: ChunkStore, name: str, factor: np.ndarray, n_chunks: int, job: LayerJob,
             graph: Graph) -> None:  # fmt: skip
    """Divide kept tensor `name` by `factor` along its channel axis (last for MatMul inputs,
    1 for NCHW conv inputs) in every chunk."""
    conv = isinstance(job.statistic, ConvInputHessian)
    for i in range(n_chunks):
        x = store.get(name, i)
        shape = [1] * x.ndim
        axis = x.ndim - 3 if conv else x.ndim - 1
        shape[axis] = -1
        store._chunks[name][i] = (x / factor.reshape(shape)).astype(x.dtype)


# float constants at least this big are arguments of a segment's program (weights, biases,
# norm parameters), not baked into it: segments of the same structure (a transformer's blocks)
# then run one compiled program; smaller and integer constants (shapes, axes, scalars) stay
# static, their values part of the program's key
ARG_MIN_ELEMENTS = 64


def _frozen(value: Any) -> Any:
    """A hashable stand-in for an attribute or constant value (arrays by dtype, shape and a
    digest of their bytes); None where it has none (a subgraph)."""
    if isinstance(value, np.ndarray | jax.Array):
        a = np.ascontiguousarray(np.asarray(value))
        return ("array", str(a.dtype), a.shape, hashlib.sha1(a.tobytes()).hexdigest())
    if isinstance(value, dict):
        items = [(k, _frozen(v)) for k, v in sorted(value.items())]
        return None if any(v is None for _, v in items) else ("dict", tuple(items))
    if isinstance(value, list | tuple):
        items = [_frozen(v) for v in value]
        return None if any(v is None for v in items) else ("seq", tuple(items))
    if isinstance(value, str | bytes | int | float | bool | np.generic) or value is None:
        return ("value", type(value).__name__, value if value is not None else "none")
    return None


@dataclass
class _Program:
    """One compiled segment, shared by segments of the same structure: `names` maps the
    segment's own tensor names to the program's, `weights` its argument constants."""

    step: Any
    names: dict[str, str]
    weights: dict[str, str]  # program name → the segment's constant
    params: dict[str, np.ndarray] = field(default_factory=dict)  # fake-quant scales, zero points


def _shared_program(seg: Sequence[Node], graph: Graph, consts: Mapping[str, Any],
                    needed: Sequence[str], keep: Sequence[str], programs: dict[Any, Any],
                    quant: FakeQuant | None = None) -> _Program | None:  # fmt: skip
    """The segment as a program on canonical names (needed inputs, then constants and outputs
    in order of first use), compiled once per structure in `programs`; None where it cannot be
    shared (a subgraph, an attribute with no stable value). With `quant`, the floating outputs
    it names are fake-quantized, their scales and zero points arguments of the program."""
    names: dict[str, str] = {}

    def canon(name: str) -> str:
        return names.setdefault(name, f"v{len(names)}")

    for name in needed:
        canon(name)
    weights: dict[str, str] = {}
    static: dict[str, Any] = {}
    key: list[Any] = [graph.opset, len(needed), quant.rounding if quant else None]
    nodes: list[Node] = []
    quantized: dict[str, TensorQuant] = {}  # program name → the activation's plan entry
    for node in seg:
        attrs = _frozen(node.attrs)
        if attrs is None or any(True for _ in node.subgraphs()):
            return None
        for i in node.inputs:
            if i and i in consts and i not in names:
                value = consts[i]
                n = canon(i)
                dtype = np.asarray(value).dtype if not isinstance(value, jax.Array) else value.dtype
                if np.issubdtype(dtype, np.floating) and np.size(value) >= ARG_MIN_ELEMENTS:
                    weights[n] = i
                    key.append((n, "argument", tuple(np.shape(value)), str(dtype)))
                else:
                    static[n] = value
                    key.append((n, _frozen(value)))
        inputs = [canon(i) if i else "" for i in node.inputs]
        outputs = [canon(o) if o else "" for o in node.outputs]
        key.append((node.op_type, node.domain, tuple(inputs), tuple(outputs), attrs))
        nodes.append(Node(node.op_type, inputs, outputs, node.name, node.attrs, node.domain))
        for o in node.outputs:
            t = quant.tensors.get(o) if quant is not None and o else None
            if t is not None:
                quantized[names[o]] = t
                key.append((names[o], t.dtype, t.axis, t.block, np.shape(t.scale)))
    kept = [names[o] for o in keep]
    key.append(tuple(kept))
    frozen_key = tuple(key)
    step = programs.get(frozen_key)
    if step is None:
        opset = graph.opset
        rounding = quant.rounding if quant is not None else "half_even"
        forms = {n: (t.qdtype, t.axis, t.block) for n, t in quantized.items()}

        def fn(inputs: Mapping[str, Any], args: Mapping[str, Any]) -> dict[str, Any]:
            env: dict[str, Any] = dict(static)
            env.update(args)
            env.update(inputs)
            for node in nodes:
                run_node(node, env, opset)
                for o in node.outputs:
                    if o in forms and jnp.issubdtype(jnp.asarray(env[o]).dtype, jnp.floating):
                        q, axis, block = forms[o]
                        env[o] = fake_quant(env[o], args[f"{o}:scale"], args[f"{o}:zero_point"],
                                            q, axis, block, rounding)  # type: ignore[arg-type]  # fmt: skip
            return {o: env[o] for o in kept}

        step = programs[frozen_key] = jit(jax.vmap(fn, in_axes=(0, None)))
    params = {f"{n}:{k}": np.asarray(getattr(t, k)) for n, t in quantized.items()
              for k in ("scale", "zero_point")}  # fmt: skip
    return _Program(step, names, weights, params)


def _run_segment(seg: Sequence[Node], graph: Graph, consts: Mapping[str, Any], store: ChunkStore,
                 last_use: Mapping[str, int], end: int, last_job: int, n_chunks: int,
                 transform: Transform | None, programs: dict[Any, Any] | None = None) -> None:  # fmt: skip
    """Run nodes `seg` over every chunk; keep their outputs that later nodes (up to the last
    job) read. Segments of one structure share a compiled program (`programs`) without a
    `transform` or with a `FakeQuant` one; another callable makes each segment compile its own."""
    if not seg:
        return
    produced = {o for n in seg for o in n.outputs if o}
    needed = sorted(
        {i for n in seg for i in node_inputs_all(n) if i not in produced and i not in consts}
    )
    keep = sorted(
        o for o in produced if last_use.get(o, -1) >= end and end <= last_job and o not in consts
    )
    missing = [i for i in needed if i not in store]
    if missing:
        raise RuntimeError(f"layerwise: tensors {missing[:3]} were not kept")
    shareable = transform is None or isinstance(transform, FakeQuant)
    shared = (
        _shared_program(seg, graph, consts, needed, keep, programs, transform)  # type: ignore[arg-type]
        if shareable and programs is not None
        else None
    )
    if shared is not None:
        args = {n: consts[real] for n, real in shared.weights.items()} | shared.params
        with jax.enable_x64(True):
            for i in range(n_chunks):
                out = shared.step({shared.names[n]: store.get(n, i) for n in needed}, args)
                for name in keep:
                    store.put(name, np.asarray(out[shared.names[name]]))
        return
    used = {i for n in seg for i in node_inputs_all(n) if i in consts}
    local = {k: consts[k] for k in used}

    def fn(inputs: Mapping[str, Any]) -> dict[str, Any]:
        env: dict[str, Any] = dict(local)
        env.update(inputs)
        for node in seg:
            outs = run_node(node, env, graph.opset)
            if transform is not None:
                for name, value in zip(node.outputs, outs, strict=False):
                    if name and jnp.issubdtype(jnp.asarray(value).dtype, jnp.floating):
                        env[name] = transform(name, value)
        return {o: env[o] for o in keep}

    step = jit(jax.vmap(fn))  # edgeq's GPU compile options (no autotuning)
    with jax.enable_x64(True):
        for i in range(n_chunks):
            out = step({name: store.get(name, i) for name in needed})
            for name in keep:
                store.put(name, np.asarray(out[name]))


_UPDATES: dict[Any, Any] = {}


def _hessian(job: LayerJob, store: ChunkStore, n_chunks: int, row_weights: Sequence[np.ndarray],
             masks: Sequence[np.ndarray], seq: int) -> np.ndarray:  # fmt: skip
    stat = job.statistic
    key = (stat, seq)
    update = _UPDATES.get(key)
    if update is None:
        conv = isinstance(stat, ConvInputHessian)

        def upd(state: Any, x: Any, w: Any, mask: Any) -> Any:
            x = x.astype(jnp.float32)
            if seq and not conv:
                real = jnp.reshape(mask != 0, (mask.shape[0], -1))
                x = jax.vmap(lambda v, r: _mask_padding(v, r, seq))(x, real)
                x = jnp.where(jnp.isnan(x), 0.0, x)
            x = x * jnp.reshape(w, (-1,) + (1,) * (x.ndim - 1))
            return stat.update(state, x)

        update = _UPDATES[key] = jit(upd)
    state = stat.init()
    with jax.enable_x64(False):
        for i in range(n_chunks):
            mask = masks[i] if masks else np.zeros((1,), np.int64)
            state = update(state, store.get(job.data, i), row_weights[i], mask)
    return stat.finalize({k: np.asarray(v) for k, v in state.items()})


__all__ = ["ChunkStore", "FakeQuant", "LayerJob", "LayerwiseResult", "layer_job", "run_layerwise"]
