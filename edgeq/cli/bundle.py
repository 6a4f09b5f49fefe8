"""CLI: `edgeq bundle`, `edgeq verify` and `edgeq keygen` (firmware bundles). Registered onto the
main app by edgeq.cli."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edgeq.errors import EdgeqError


def register(app: typer.Typer, console: Console, err_console: Console,
             fail: Callable[[Any], typer.Exit]) -> None:  # fmt: skip
    """Add this module's commands to `app`."""

    @app.command()
    def bundle(
        artifact: Annotated[Path, typer.Argument(help="The .tflite written by `edgeq export`.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder to write.")],
        sign: Annotated[
            Path | None, typer.Option("--sign", help="Ed25519 private key (PEM) to sign with.")
        ] = None,
        tar: Annotated[bool, typer.Option("--tar", help="Write one OUT.tar.gz instead.")] = False,
        target: Annotated[str | None, typer.Option(help="Target name for the manifest.")] = None,
        force: Annotated[bool, typer.Option(
            "--force", help="Write into an existing folder that is not an earlier bundle "
            "(only the bundle's files are replaced).")] = False,
    ) -> None:  # fmt: skip
        """Firmware bundle: .tflite, model_data.cc/.h (alignas(16) g_model), manifest.json with
        I/O quantization, ops to register, arena estimate and SHA-256s; optional signature."""
        from edgeq.exporters.tflite.bundle import make_bundle

        try:
            written = make_bundle(artifact, out, sign_key=sign, tar=tar, target=target, force=force)
        except EdgeqError as exc:
            raise fail(exc) from None
        console.print(f"wrote {written}" + (" (signed)" if sign else ""))

    @app.command()
    def verify(
        path: Annotated[Path, typer.Argument(help="Bundle folder or .tar.gz.")],
        pubkey: Annotated[
            Path | None, typer.Option("--pubkey", help="Ed25519 public key (PEM) to check with.")
        ] = None,
    ) -> None:
        """Check a firmware bundle's hashes (and signature with --pubkey); non-zero exit if not."""
        from edgeq.exporters.tflite.bundle import verify_bundle

        try:
            result = verify_bundle(path, pubkey)
        except EdgeqError as exc:
            raise fail(exc) from None
        sig = ("signature OK" if result.signature_checked
               else "signed, signature not checked (pass --pubkey)" if result.signed
               else "unsigned")  # fmt: skip
        console.print(f"OK: {len(result.files)} files match the manifest; {sig}")

    @app.command()
    def keygen(
        out: Annotated[Path, typer.Option("--out", "-o", help="Private key file to write.")],
    ) -> None:
        """An Ed25519 key pair for `edgeq bundle --sign`: OUT (private, mode 0600) and OUT.pub;
        an existing file is never overwritten."""
        from edgeq.exporters.tflite.bundle import generate_key

        pub = out.with_name(out.name + ".pub")
        try:
            generate_key(out, pub)
        except EdgeqError as exc:
            raise fail(exc) from None
        except OSError as exc:
            raise fail(
                EdgeqError(f"cannot write '{out}' ({exc})", "pick a writable path")
            ) from None
        console.print(f"wrote {out} (private, keep it secret) and {pub} (public)")
