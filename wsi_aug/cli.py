"""The `wsi-aug` command: a click group whose commands are loaded lazily.

Each command lives in `wsi_aug.commands.*`, parses its options and calls one library function.
Errors a user can act on (`WsiAugError`) print one line and exit non-zero, without a traceback.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys

# Before numpy loads: OpenBLAS's worker threads busy-wait about 2**28 cycles (0.1 s) for work
# after they start and after each call before they sleep; a command that does no threaded BLAS
# (extraction, most stages) paid that CPU time on a core its own work needed. 2**4 cycles: they
# sleep at once and a large product wakes them as before. A value set by the user is kept.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import click

from wsi_aug import __version__
from wsi_aug.errors import WsiAugError

TOOLS: dict[str, str] = {
    "info": "wsi_aug.commands.data:info",
    "run": "wsi_aug.commands.pipeline:run",
    "demo": "wsi_aug.commands.pipeline:demo",
    "report": "wsi_aug.commands.report:report",
    "perception-test": "wsi_aug.commands.perception:perception_test",
    "perception-score": "wsi_aug.commands.perception:perception_score",
}
"""Commands that are not stages; every stage of `wsi_aug.stages.registry` is a command too."""


def command_names() -> list[str]:
    """Every command: `info`, the stages in pipeline order, `run`, `demo`, then the reports."""
    from wsi_aug.stages.registry import NAMES

    return ["info", *NAMES, "run", "demo", "report", "perception-test", "perception-score"]


COMMANDS: tuple[str, ...] = tuple(command_names())


class LazyGroup(click.Group):
    """A group that builds a command only when that command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return command_names()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        from wsi_aug.stages import registry

        if cmd_name in registry.MODULES:
            from wsi_aug.options import stage_command

            return stage_command(registry.get(cmd_name))
        target = TOOLS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr, None)
        return command if isinstance(command, click.Command) else None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wsi-aug")
def cli() -> None:
    """Glomerulus patches from whole-slide images, multiplied with a mode-seeking Pix2Pix GAN.

    Stages: extract -> structure -> train-gan -> synthesize -> eval-seg / eval-gan.
    Each writes a Zarr store in the work folder (--work) and is skipped when its cache is valid.
    """


def one_line(text: str) -> str:
    """An error message kept to one line, even when a file name holds a line break."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: the file or folder, the reason, the fix."""
    import errno

    where = exc.filename if exc.filename is not None else "a file"
    reason = exc.strerror or str(exc)
    fixes = {
        errno.EACCES: "check its permissions, or choose another --work folder",
        errno.EPERM: "check its permissions, or choose another --work folder",
        errno.EROFS: "the disk is read-only: choose a writable --work folder",
        errno.ENOSPC: "the disk is full: free some space or choose another --work folder",
        errno.EDQUOT: "the disk quota is used up: free some space or choose another --work folder",
        errno.ENOENT: "check the path",
    }
    fix = fixes.get(exc.errno or 0, "check the path and the disk")
    return f"{where}: {reason}; {fix}"


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the group, turning user errors into one line and a non-zero exit."""
    for stream in (sys.stdout, sys.stderr):  # file names that are not UTF-8 print as \xff
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    try:
        cli.main(args=argv, prog_name="wsi-aug", standalone_mode=False)
    except WsiAugError as exc:
        click.echo(f"error: {one_line(str(exc))}", err=True)
        sys.exit(2)
    except OSError as exc:  # a read-only, full or vanished folder: name it and say what to do
        click.echo(f"error: {one_line(os_error_line(exc))}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    finally:
        # Exit without the interpreter's last garbage collections over every object the
        # command made (0.2 s of CPU after importing zarr and torch; nothing is left to free).
        gc.freeze()
