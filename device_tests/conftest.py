"""Fixtures for the device tests: tiny artifacts built by hand, and a real sshd on 127.0.0.1.

The sshd fixture generates a client key and a host key per session, writes an sshd_config that
accepts only that key, listens on a free loopback port, and points the sessions' HOME at a
sandbox folder (SetEnv), so that even a broken quoting of `~` could only touch the sandbox.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeq.device_tests.transports import DeviceOptions

SSHD = "/usr/sbin/sshd"
INJECTION_NAME = "x; rm -rf ~"


# ---------------------------------------------------------------- tiny artifacts
def write_conv_onnx(path: Path, seed: int = 0) -> Path:
    """x[1,3,8,8] -> Conv(4, 3x3, pad 1) -> Relu -> y[1,4,8,8]."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]  # fmt: skip
    graph = helper.make_graph(
        nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


def write_relu_onnx(path: Path) -> Path:
    """x[1,3,4,4] -> Relu -> y (NCHW), the float model of `write_relu_tflite`."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


def write_relu_tflite(path: Path, scale: float = 0.05, zero_point: int = -3) -> Path:
    """An int8 RELU over an NHWC [1,4,4,3] tensor (TFLite object API): quantized I/O and a
    layout change, the two things the runner must undo."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    def tensor(name: str) -> s.TensorT:
        t = s.TensorT()
        t.shape, t.type, t.buffer, t.name = [1, 4, 4, 3], s.TensorType.INT8, 0, name
        q = s.QuantizationParametersT()
        q.scale, q.zeroPoint = [scale], [zero_point]
        t.quantization = q
        return t

    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.RELU
    code.version = 2  # RELU int8
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    sub = s.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.operators = [tensor("x"), tensor("y")], [0], [1], [op]
    model = s.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [sub]
    model.buffers, model.description = [s.BufferT()], "edgeq devicetest fixture"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())
    return path


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("artifacts")
    return {
        "conv_onnx": write_conv_onnx(d / "conv.onnx"),
        "relu_onnx": write_relu_onnx(d / "relu.onnx"),
        "relu_tflite": write_relu_tflite(d / "relu.tflite"),
    }


# ---------------------------------------------------------------- a real sshd on loopback
@dataclass
class SshServer:
    port: int
    user: str
    key: Path
    known_hosts: Path
    home: Path  # the sessions' HOME (sandbox)
    canary: Path  # a file in that HOME that must survive every test

    @property
    def device(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def options(self, **kw: object) -> DeviceOptions:
        return DeviceOptions(remote_python=sys.executable, identity=self.key,
                             ssh_options=(f"UserKnownHostsFile={self.known_hosts}",),
                             connect_timeout_s=5, **kw)  # type: ignore[arg-type]  # fmt: skip

    def cli_args(self) -> list[str]:
        return ["--device", self.device, "--remote-python", sys.executable, "--identity",
                str(self.key), "--ssh-option", f"UserKnownHostsFile={self.known_hosts}"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd did not listen on {port}: {log.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    if not (os.path.exists(SSHD) and shutil.which("ssh") and shutil.which("ssh-keygen")):
        pytest.skip(
            "openssh-server/client not installed (`make test` installs openssh-server when run as root)"
        )
    d = tmp_path_factory.mktemp("sshd")
    for key in ("client_key", "host_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)],
                       check=True, capture_output=True)  # fmt: skip
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    home = d / "home"
    home.mkdir()
    canary = home / "canary.txt"
    canary.write_text("still here\n")
    user = getpass.getuser()
    port = _free_port()
    config = d / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nStrictModes no\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        f"PermitRootLogin prohibit-password\nAllowUsers {user}\nSetEnv HOME={home}\n"
        "LogLevel ERROR\n"
    )
    if os.geteuid() == 0:  # sshd's privilege-separation folder (the package's service makes it)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    log = d / "sshd.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config), "-p", str(port)],
                                stdout=log_file, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait_port(port, proc, log, 10)
        yield SshServer(port, user, d / "client_key", d / "known_hosts", home, canary)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
