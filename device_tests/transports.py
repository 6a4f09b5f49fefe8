"""Device transports for `edgeq devicetest`: local, ssh, adb and xcode.

Every transport does the same four things around one temp work folder on the device: push files,
run a command there, pull files back, remove the folder. Commands are argument lists locally
(never `shell=True`); where a remote shell must parse a string (ssh, `adb shell`), every part is
`shlex.quote`d by the builders below, so no file, model or path name can inject a command. The
builders are pure methods so tests check them without a device.

Device specs: ``local``, ``ssh://[user@]host[:port]``, ``adb`` or ``adb:SERIAL``, ``xcode`` (this
Mac) or ``xcode+ssh://[user@]mac[:port]`` (a Mac reached over ssh).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeq.errors import EdgeqError, InputError

log = logging.getLogger(__name__)

_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)$")
_USER = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")
_SERIAL = re.compile(r"^[A-Za-z0-9_.:-]+$")
_WORKDIR = re.compile(r"^/[A-Za-z0-9_./-]+$")


class DeviceError(EdgeqError):
    """The device could not be reached, or the run on it failed or vanished."""


@dataclass(frozen=True)
class DeviceOptions:
    """How to reach and drive a device (all optional)."""

    remote_python: str | None = None  # python on the device (default python3; local: this one)
    identity: Path | None = None  # ssh -i KEY
    ssh_options: tuple[str, ...] = ()  # extra `-o KEY=VALUE` for ssh
    connect_timeout_s: int = 10
    timeout_s: float = 600.0  # one command on the device (push, run, pull)
    adb_runner: Path | None = None  # local binary pushed to the phone (benchmark_model, ...)
    adb_runner_kind: str = "python"  # python | benchmark_model | onnxruntime_perf_test
    runner_args: tuple[str, ...] = ()  # extra arguments for the adb runner binary


@dataclass(frozen=True)
class DeviceSpec:
    kind: str  # local | ssh | adb | xcode
    host: str | None = None
    user: str | None = None
    port: int | None = None
    serial: str | None = None
    over_ssh: bool = False  # xcode+ssh

    def __str__(self) -> str:
        if self.kind in ("ssh", "xcode") and self.host:
            prefix = "xcode+ssh" if self.kind == "xcode" else "ssh"
            user = f"{self.user}@" if self.user else ""
            port = f":{self.port}" if self.port else ""
            return f"{prefix}://{user}{self.host}{port}"
        if self.kind == "adb" and self.serial:
            return f"adb:{self.serial}"
        return self.kind


def parse_device(spec: str) -> DeviceSpec:
    """`local`, `ssh://[user@]host[:port]`, `adb[:SERIAL]`, `xcode`, `xcode+ssh://...`."""
    fix = "use --device local, ssh://user@host[:port], adb[:SERIAL], xcode or xcode+ssh://user@mac"
    if spec == "local":
        return DeviceSpec("local")
    if spec == "xcode":
        return DeviceSpec("xcode")
    if spec == "adb" or spec.startswith("adb:"):
        serial = spec[4:] or None
        if serial is not None and not _SERIAL.match(serial):
            raise InputError(f"bad adb serial '{serial}' in --device", fix)
        return DeviceSpec("adb", serial=serial)
    for prefix, kind in (("ssh://", "ssh"), ("xcode+ssh://", "xcode")):
        if spec.startswith(prefix):
            rest = spec[len(prefix) :].rstrip("/")
            user, _, hostport = rest.rpartition("@")
            host, port = hostport, None
            m = re.match(r"^(.*):(\d+)$", hostport)
            if m and not hostport.endswith("]"):
                host, port = m.group(1), int(m.group(2))
            if not host or not _HOST.match(host) or host.startswith("-"):
                raise InputError(f"bad host '{host}' in --device '{spec}'", fix)
            if user and not _USER.match(user):
                raise InputError(f"bad user '{user}' in --device '{spec}'", fix)
            if port is not None and not 0 < port < 65536:
                raise InputError(f"bad port {port} in --device '{spec}'", fix)
            return DeviceSpec(kind, host=host, user=user or None, port=port,
                              over_ssh=kind == "xcode")  # fmt: skip
    raise InputError(f"unknown device '{spec}'", fix)


@dataclass
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


def quote_remote_path(path: str) -> str:
    """shlex.quote, except that a leading `~/` still means the remote home."""
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def remote_shell(argv: Sequence[str]) -> str:
    """One shell-safe command string from an argument list."""
    return " ".join(shlex.quote(a) for a in argv)


def _tail(text: str, lines: int = 5) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept)


def _safe_name(name: str) -> str:
    if not name or "/" in name or "\x00" in name or name in (".", ".."):
        raise InputError(f"'{name}' is not a plain file name", "rename the file")
    return name


class Transport(ABC):
    """A temp work folder on a device, and push / run / pull / cleanup around it."""

    def __init__(self, spec: DeviceSpec, options: DeviceOptions) -> None:
        self.spec = spec
        self.options = options
        self.workdir: str | None = None

    # context manager: the work folder exists inside `with`, and is removed after
    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def path(self, name: str) -> str:
        if self.workdir is None:
            raise DeviceError("transport used before open()")
        return f"{self.workdir}/{_safe_name(name)}"

    @property
    def python(self) -> str:
        return self.options.remote_python or "python3"

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def push(self, local: Path, name: str) -> None: ...

    @abstractmethod
    def pull(self, name: str, local: Path) -> None: ...

    @abstractmethod
    def exec(self, argv: Sequence[str], timeout: float | None = None) -> CommandResult:
        """Run `argv` inside the work folder; never raises on a non-zero exit."""

    def kill_runner(self, pid_file: str = "runner.pid") -> None:
        """Best effort: stop a runner left behind by a timeout."""
        return None

    def _call(self, argv: Sequence[str], what: str, timeout: float | None = None,
              stdin: object = None, stdout: object = None) -> CommandResult:  # fmt: skip
        timeout = self.options.timeout_s if timeout is None else timeout
        log.debug("%s: %s", what, argv)
        try:
            proc = subprocess.run(
                list(argv), stdin=stdin or subprocess.DEVNULL,  # type: ignore[arg-type]
                stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE,  # type: ignore[arg-type]
                timeout=timeout, check=False,
            )  # fmt: skip
        except FileNotFoundError as exc:
            raise DeviceError(f"'{argv[0]}' is not installed on this machine ({what})",
                              f"install {argv[0]} or put it on PATH") from exc  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(f"{what} on {self.spec} did not finish within {timeout:.0f} s",
                              "check the device, or raise --timeout") from exc  # fmt: skip
        out = proc.stdout.decode(errors="replace") if isinstance(proc.stdout, bytes) else ""
        return CommandResult(proc.returncode, out, proc.stderr.decode(errors="replace"))

    def _check(self, result: CommandResult, what: str) -> CommandResult:
        if result.returncode != 0:
            raise DeviceError(
                f"{what} on {self.spec} failed (exit {result.returncode}): "
                f"{_tail(result.stderr) or 'no message'}",
                self._fix_hint(),
            )
        return result

    def _fix_hint(self) -> str:
        return "check that the device is reachable and has space in its temp folder"


# ---------------------------------------------------------------- local
class LocalTransport(Transport):
    """This machine; the same runner script in a subprocess, as on a device."""

    @property
    def python(self) -> str:
        return self.options.remote_python or sys.executable

    def open(self) -> None:
        self.workdir = tempfile.mkdtemp(prefix="edgeq-devicetest.")

    def close(self) -> None:
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def push(self, local: Path, name: str) -> None:
        dst = Path(self.path(name))
        if Path(local).is_dir():
            shutil.copytree(local, dst)
        else:
            shutil.copyfile(local, dst)

    def pull(self, name: str, local: Path) -> None:
        src = Path(self.path(name))
        if not src.is_file():
            raise DeviceError(f"'{name}' was not written on {self.spec}")
        shutil.copyfile(src, local)

    def exec(self, argv: Sequence[str], timeout: float | None = None) -> CommandResult:
        timeout = self.options.timeout_s if timeout is None else timeout
        try:
            proc = subprocess.run(list(argv), cwd=self.workdir, capture_output=True,
                                  timeout=timeout, check=False, stdin=subprocess.DEVNULL)  # fmt: skip
        except FileNotFoundError as exc:
            raise DeviceError(f"'{argv[0]}' not found on {self.spec}",
                              "pass the right interpreter with --remote-python") from exc  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(f"the run on {self.spec} did not finish within {timeout:.0f} s",
                              "raise --timeout or lower --runs") from exc  # fmt: skip
        return CommandResult(proc.returncode, proc.stdout.decode(errors="replace"),
                             proc.stderr.decode(errors="replace"))  # fmt: skip


# ---------------------------------------------------------------- ssh
class SshTransport(Transport):
    """A Linux board (or a Mac) over the system OpenSSH client, in batch mode.

    Files travel through `ssh HOST 'cat > PATH'` (folders as a tar stream) rather than scp, so
    no remote path is ever glob-expanded or parsed by a shell unquoted."""

    def destination(self) -> str:
        return f"{self.spec.user}@{self.spec.host}" if self.spec.user else str(self.spec.host)

    def ssh_argv(self, remote_command: str) -> list[str]:
        o = self.options
        argv = ["ssh", "-T", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={o.connect_timeout_s}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-o", "StrictHostKeyChecking=accept-new"]  # fmt: skip
        if o.identity is not None:
            argv += ["-i", str(o.identity), "-o", "IdentitiesOnly=yes"]
        if self.spec.port:
            argv += ["-p", str(self.spec.port)]
        for opt in o.ssh_options:
            argv += ["-o", opt]
        return [*argv, "--", self.destination(), remote_command]

    # remote command strings (every variable part quoted)
    def mkdir_command(self) -> str:
        return 'mktemp -d "${TMPDIR:-/tmp}/edgeq-devicetest.XXXXXX"'

    def push_file_command(self, name: str) -> str:
        return f"cat > {shlex.quote(self.path(name))}"

    def push_dir_command(self, name: str) -> str:
        p = shlex.quote(self.path(name))
        return f"mkdir -p {p} && tar -x -f - -C {p}"

    def pull_command(self, name: str) -> str:
        return f"cat {shlex.quote(self.path(name))}"

    def exec_command(self, argv: Sequence[str]) -> str:
        parts = [quote_remote_path(argv[0]), *(shlex.quote(a) for a in argv[1:])]
        return f"cd {shlex.quote(str(self.workdir))} && exec {' '.join(parts)}"

    def cleanup_command(self) -> str:
        return f"rm -rf -- {shlex.quote(str(self.workdir))}"

    def kill_command(self, pid_file: str) -> str:
        return f'kill -9 "$(cat {shlex.quote(self.path(pid_file))})" 2>/dev/null; true'

    def _fix_hint(self) -> str:
        return (f"check `ssh {self.destination()}` works without a password (key in "
                "authorized_keys, --identity KEY), and the host/port")  # fmt: skip

    def open(self) -> None:
        res = self._check(self._call(self.ssh_argv(self.mkdir_command()), "creating a temp folder",
                                     self.options.connect_timeout_s + 30), "connecting")  # fmt: skip
        workdir = res.stdout.strip()
        if not _WORKDIR.match(workdir):
            raise DeviceError(f"{self.spec} returned an odd temp folder '{workdir}'")
        self.workdir = workdir

    def close(self) -> None:
        if self.workdir is None:
            return
        try:
            res = self._call(self.ssh_argv(self.cleanup_command()), "cleanup", 60)
            if res.returncode != 0:
                log.warning("could not remove %s on %s: %s", self.workdir, self.spec,
                            _tail(res.stderr))  # fmt: skip
        except DeviceError as exc:
            log.warning("could not remove %s on %s: %s", self.workdir, self.spec, exc)
        self.workdir = None

    def push(self, local: Path, name: str) -> None:
        local = Path(local)
        if local.is_dir():
            with tempfile.TemporaryFile() as tar_file:
                with tarfile.open(fileobj=tar_file, mode="w") as tar:
                    tar.add(local, arcname=".")
                tar_file.seek(0)
                res = self._call(self.ssh_argv(self.push_dir_command(name)), f"pushing '{name}'",
                                 stdin=tar_file)  # fmt: skip
        else:
            with open(local, "rb") as f:
                res = self._call(self.ssh_argv(self.push_file_command(name)), f"pushing '{name}'",
                                 stdin=f)  # fmt: skip
        self._check(res, f"pushing '{name}'")

    def pull(self, name: str, local: Path) -> None:
        tmp = Path(local).with_name(Path(local).name + ".part")
        with open(tmp, "wb") as f:
            res = self._call(self.ssh_argv(self.pull_command(name)), f"pulling '{name}'", stdout=f)
        if res.returncode != 0:
            tmp.unlink(missing_ok=True)
            self._check(res, f"pulling '{name}'")
        os.replace(tmp, local)

    def exec(self, argv: Sequence[str], timeout: float | None = None) -> CommandResult:
        try:
            return self._call(self.ssh_argv(self.exec_command(argv)), "the run", timeout)
        except DeviceError:
            self.kill_runner()
            raise

    def kill_runner(self, pid_file: str = "runner.pid") -> None:
        if self.workdir is None:
            return
        try:
            self._call(self.ssh_argv(self.kill_command(pid_file)), "stopping the runner", 30)
        except DeviceError as exc:
            log.warning("could not stop the runner on %s: %s", self.spec, exc)


# ---------------------------------------------------------------- adb
class AdbTransport(Transport):
    """An Android device over adb. `adb push/pull` take paths literally (sync protocol);
    `adb shell` gets one quoted command string."""

    def adb(self, *args: str) -> list[str]:
        base = ["adb", "-s", self.spec.serial] if self.spec.serial else ["adb"]
        return [*base, *args]

    def shell_argv(self, command: str) -> list[str]:
        return self.adb("shell", command)

    def mkdir_argv(self) -> list[str]:
        return self.shell_argv("mktemp -d /data/local/tmp/edgeq-devicetest.XXXXXX")

    def push_argv(self, local: Path, name: str) -> list[str]:
        return self.adb("push", str(Path(local).resolve()), self.path(name))

    def pull_argv(self, name: str, local: Path) -> list[str]:
        return self.adb("pull", self.path(name), str(Path(local).resolve()))

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        parts = [shlex.quote(a) for a in argv]
        return self.shell_argv(f"cd {shlex.quote(str(self.workdir))} && {' '.join(parts)}")

    def chmod_argv(self, name: str) -> list[str]:
        return self.shell_argv(f"chmod 755 {shlex.quote(self.path(name))}")

    def cleanup_argv(self) -> list[str]:
        return self.shell_argv(f"rm -rf {shlex.quote(str(self.workdir))}")

    def _fix_hint(self) -> str:
        return "check `adb devices` lists the phone (USB debugging on, authorized)"

    def open(self) -> None:
        res = self._check(self._call(self.mkdir_argv(), "creating a temp folder", 60), "connecting")
        workdir = res.stdout.strip()
        if not _WORKDIR.match(workdir):
            raise DeviceError(f"{self.spec} returned an odd temp folder '{workdir}'",
                              self._fix_hint())  # fmt: skip
        self.workdir = workdir

    def close(self) -> None:
        if self.workdir is None:
            return
        try:
            self._call(self.cleanup_argv(), "cleanup", 60)
        except DeviceError as exc:
            log.warning("could not remove %s on %s: %s", self.workdir, self.spec, exc)
        self.workdir = None

    def push(self, local: Path, name: str) -> None:
        self._check(self._call(self.push_argv(local, name), f"pushing '{name}'"), "adb push")

    def pull(self, name: str, local: Path) -> None:
        self._check(self._call(self.pull_argv(name, local), f"pulling '{name}'"), "adb pull")

    def exec(self, argv: Sequence[str], timeout: float | None = None) -> CommandResult:
        return self._call(self.exec_argv(argv), "the run", timeout)

    def make_executable(self, name: str) -> None:
        self._check(self._call(self.chmod_argv(name), "chmod", 60), "chmod")


# ---------------------------------------------------------------- xcode
class XcodeTransport(Transport):
    """A Mac, here or over ssh: `xcrun coremlcompiler compile` the .mlpackage, then the runner
    (coremltools) predicts on the compiled model and reports MLComputePlan device placement."""

    def __init__(self, spec: DeviceSpec, options: DeviceOptions) -> None:
        super().__init__(spec, options)
        if spec.over_ssh:
            self.inner: Transport = SshTransport(spec, options)
        else:
            self.inner = LocalTransport(spec, options)

    @property
    def python(self) -> str:
        return self.inner.python

    @staticmethod
    def compile_argv(package: str, out_dir: str) -> list[str]:
        return ["xcrun", "coremlcompiler", "compile", package, out_dir]

    def open(self) -> None:
        if not self.spec.over_ssh and sys.platform != "darwin":
            raise DeviceError("--device xcode needs macOS with Xcode (this is "
                              f"{sys.platform})", "run on a Mac, or use xcode+ssh://user@mac")  # fmt: skip
        self.inner.open()
        self.workdir = self.inner.workdir

    def close(self) -> None:
        self.inner.close()
        self.workdir = None

    def push(self, local: Path, name: str) -> None:
        self.inner.push(local, name)

    def pull(self, name: str, local: Path) -> None:
        self.inner.pull(name, local)

    def exec(self, argv: Sequence[str], timeout: float | None = None) -> CommandResult:
        return self.inner.exec(argv, timeout)

    def kill_runner(self, pid_file: str = "runner.pid") -> None:
        self.inner.kill_runner(pid_file)

    def compile(self, package: str) -> str:
        """Compile `package` in the work folder; returns the .mlmodelc name."""
        res = self.exec(self.compile_argv(package, "."), self.options.timeout_s)
        if res.returncode != 0:
            raise DeviceError(f"xcrun coremlcompiler compile failed on {self.spec}: "
                              f"{_tail(res.stderr) or _tail(res.stdout)}",
                              "check Xcode's command line tools (xcode-select --install)")  # fmt: skip
        return Path(package).stem + ".mlmodelc"


def open_transport(device: str | DeviceSpec, options: DeviceOptions | None = None) -> Transport:
    spec = parse_device(device) if isinstance(device, str) else device
    options = options or DeviceOptions()
    cls: type[Transport] = {"local": LocalTransport, "ssh": SshTransport, "adb": AdbTransport,
                            "xcode": XcodeTransport}[spec.kind]  # fmt: skip
    return cls(spec, options)


__all__ = [
    "AdbTransport",
    "CommandResult",
    "DeviceError",
    "DeviceOptions",
    "DeviceSpec",
    "LocalTransport",
    "SshTransport",
    "Transport",
    "XcodeTransport",
    "open_transport",
    "parse_device",
    "quote_remote_path",
    "remote_shell",
]
