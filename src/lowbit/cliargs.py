"""Argument types and up-front checks of the ``lowbit`` command line (stdlib only, no torch).

Every check fails with one ``lowbit CMD: error: ...`` line and exit code 2, before any data is
read or any training starts: argparse ``type=`` functions for numbers and shapes, and
:func:`check_out_dir` / :func:`check_output_file` for where results go.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["Parser", "HelpFormatter", "TORCH_HINT", "positive_int", "nonneg_int", "input_size",
           "key_value", "model_ref", "check_out_dir", "check_output_file", "torch_missing",
           "fail"]

TORCH_HINT = "this command needs PyTorch: pip install torch==2.13.0 then pip install lowbit[train]"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after an option's help, except where there is nothing to show
    (None, a store_true's False) or the help already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == [] \
                or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one ``PROG: error: MESSAGE`` line (exit code 2),
    with defaults shown in every ``--help``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def fail(cmd: str, message: str) -> int:
    """Print ``lowbit CMD: error: MESSAGE`` to stderr and return exit code 2."""
    print(f"lowbit {cmd}: error: {message}", file=sys.stderr)
    return 2


def _int(value: str, lo: int, what: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}") from None
    if n < lo:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}")
    return n


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1 (--epochs, --batch-size, --limit, --threads)."""
    return _int(value, 1, "an integer >= 1")


def nonneg_int(value: str) -> int:
    """argparse type: an integer >= 0 (--val-size)."""
    return _int(value, 0, "an integer >= 0")


def input_size(value: str) -> tuple[int, int, int]:
    """argparse type: ``C,H,W`` (or ``CxHxW``) of positive integers, e.g. ``3,32,32``."""
    parts = value.replace("x", ",").split(",")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W (three positive integers, e.g. "
                                         f"3,32,32), got {value!r}")
    return dims  # type: ignore[return-value]


def key_value(value: str) -> tuple[str, str]:
    """argparse type: ``KEY=VALUE`` (--model-arg); the value is typed later, against the
    builder's signature."""
    key, sep, val = value.partition("=")
    if not sep or not key.strip() or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a Python identifier, "
                                         f"got {value!r}")
    return key.strip(), val


def model_ref(value: str) -> str:
    """argparse type: a registered model name or ``package.module:function``.  Registered names
    are checked here when torch is present; without it the command reports that instead."""
    if ":" in value:
        mod, _, fn = value.partition(":")
        if not all(p.isidentifier() for p in mod.split(".")) or \
                not all(p.isidentifier() for p in fn.split(".")):
            raise argparse.ArgumentTypeError(
                f"expected a registered model name or package.module:function, got {value!r}")
        return value
    try:
        from lowbit.train import registry
        names = registry.names()
    except ImportError:         # no torch: the handler says so in its own words
        return value
    if value not in names:
        raise argparse.ArgumentTypeError(
            f"unknown model {value!r}; choose from: {', '.join(names)}, or give your own "
            f"builder as package.module:function")
    return value


def torch_missing() -> bool:
    """True when ``import torch`` fails (torch not installed, or deliberately hidden)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return True
    return False


def check_out_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Create folder ``path`` if needed and prove it writable with a temporary file; raise
    ValueError with one clear sentence otherwise."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{flag} {path}: is a file, expected a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot create this folder ({e.strerror or e})") from None
    try:
        with tempfile.NamedTemporaryFile(dir=p, prefix=".lowbit-write-test-"):
            pass
    except OSError as e:
        raise ValueError(f"{flag} {path}: folder is not writable ({e.strerror or e})") from None
    return p


def check_output_file(path: str | os.PathLike, overwrite: bool, flag: str = "-o/--output",
                      source: str | os.PathLike | None = None) -> Path:
    """An output file: not an existing file unless ``overwrite``, never the ``source`` itself,
    and in a folder that exists (or can be made) and is writable."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{flag} {path}: is a folder, expected a file name")
    if source is not None and p.exists() and Path(source).exists() and \
            os.path.samefile(p, source):
        raise ValueError(f"{flag} {path}: is the input file itself")
    if p.exists() and not overwrite:
        raise ValueError(f"{flag} {path}: file exists; pass --overwrite to replace it")
    check_out_dir(p.parent if str(p.parent) else ".", f"{flag} {path}: folder")
    return p
