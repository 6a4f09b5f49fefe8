"""Every transport's command builder keeps a hostile file name one argument: it round-trips
through the shell that would parse it on the device (sh here) without being interpreted."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from edgeq.device_tests.conftest import INJECTION_NAME
from edgeq.device_tests.devicetest import adb_benchmark_argv
from edgeq.device_tests.transports import (
    AdbTransport,
    DeviceOptions,
    SshTransport,
    XcodeTransport,
    parse_device,
    quote_remote_path,
)
from edgeq.errors import InputError

HOSTILE = [INJECTION_NAME, "a'b", 'q"$(touch pwned)"`touch pwned`', "-rf", "sp ace\ttab", "*"]


def _sh(command: str, cwd: Path) -> str:
    """Run `command` as a device's POSIX shell would, in `cwd`."""
    res = subprocess.run(["sh", "-c", command], cwd=cwd, capture_output=True, text=True,
                         check=True, env={"HOME": str(cwd / "home"), "PATH": "/usr/bin:/bin"})  # fmt: skip
    return res.stdout


def _ssh(workdir: str = "/tmp/edgeq-devicetest.abc123") -> SshTransport:
    t = SshTransport(parse_device("ssh://pi@raspberrypi.local:2222"), DeviceOptions())
    t.workdir = workdir
    return t


def _adb(workdir: str = "/data/local/tmp/edgeq-devicetest.abc123") -> AdbTransport:
    t = AdbTransport(parse_device("adb:emulator-5554"), DeviceOptions())
    t.workdir = workdir
    return t


@pytest.mark.parametrize("name", HOSTILE)
def test_ssh_commands_keep_names_whole(name: str, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    (tmp_path / "home").mkdir()
    t = _ssh(str(workdir))
    # what the remote shell receives: the ssh argv's last element
    run = t.ssh_argv(t.exec_command(["printf", "%s\\n", name, "$HOME"]))
    assert run[-3:-1] == ["--", "pi@raspberrypi.local"]
    assert _sh(run[-1], tmp_path).splitlines() == [name, "$HOME"]
    # push writes exactly one file with that name, pull reads it back
    _sh(f"echo payload | {t.push_file_command(name)}", tmp_path)
    assert [p.name for p in workdir.iterdir()] == [name]
    assert _sh(t.pull_command(name), tmp_path) == "payload\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "work"]  # nothing else made
    _sh(t.cleanup_command(), tmp_path)
    assert not workdir.exists()


def test_ssh_remote_python_home_is_expanded_but_nothing_else() -> None:
    assert quote_remote_path("~/venv/bin/python") == '"$HOME"/venv/bin/python'
    assert shlex.split(quote_remote_path("~/x; rm -rf ~")) == ["$HOME/x; rm -rf ~"]
    assert quote_remote_path("/usr/bin/python3") == "/usr/bin/python3"


@pytest.mark.parametrize("name", HOSTILE)
def test_adb_commands_keep_names_whole(name: str, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    (tmp_path / "home").mkdir()
    t = _adb(str(workdir))
    push = t.push_argv(tmp_path / name, name)
    assert push[:4] == ["adb", "-s", "emulator-5554", "push"]
    assert push[-1] == f"{workdir}/{name}"  # adb push/pull: literal paths, no shell
    assert push[-2] == str((tmp_path / name).resolve())  # absolute: never read as an option
    run = t.exec_argv(["printf", "%s\\n", name])
    assert run[:4] == ["adb", "-s", "emulator-5554", "shell"] and len(run) == 5
    assert _sh(run[-1], tmp_path).splitlines() == [name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "work"]
    bench = adb_benchmark_argv("benchmark_model", "benchmark_model", name, 5, 1)
    assert bench[1] == f"--graph={name}"
    assert _sh(t.exec_argv(["printf", "%s\\n", *bench])[-1], tmp_path).splitlines() == bench


@pytest.mark.parametrize("name", HOSTILE)
def test_xcode_compile_is_an_argument_list(name: str) -> None:
    argv = XcodeTransport.compile_argv(name + ".mlpackage", ".")
    assert argv == ["xcrun", "coremlcompiler", "compile", name + ".mlpackage", "."]
    t = XcodeTransport(parse_device("xcode+ssh://me@mac.local"), DeviceOptions())
    t.inner.workdir = "/tmp/edgeq-devicetest.abc"
    remote = t.inner.exec_command(argv)  # type: ignore[attr-defined]
    assert shlex.split(remote)[-5:] == argv


@pytest.mark.parametrize(
    "spec",
    ["ssh://-oProxyCommand=touch/pwned", "ssh://pi@host;reboot", "ssh://pi@ho st",
     "ssh://p$(id)@host", "ssh://pi@host:99999", "adb:$(reboot)", "adb:a b", "telnet://x", ""],
)  # fmt: skip
def test_bad_device_specs_are_refused(spec: str) -> None:
    with pytest.raises(InputError):
        parse_device(spec)


def test_device_specs_parse() -> None:
    s = parse_device("ssh://pi@10.0.0.7:2222")
    assert (s.kind, s.user, s.host, s.port) == ("ssh", "pi", "10.0.0.7", 2222)
    assert str(s) == "ssh://pi@10.0.0.7:2222"
    assert parse_device("ssh://board").user is None
    assert parse_device("adb").serial is None
    assert parse_device("adb:R58M123ABC").serial == "R58M123ABC"
    x = parse_device("xcode+ssh://me@mac.local")
    assert (x.kind, x.over_ssh, x.host) == ("xcode", True, "mac.local")


def test_names_with_slashes_are_refused() -> None:
    t = _ssh()
    with pytest.raises(InputError):
        t.push_file_command("../../etc/passwd")
