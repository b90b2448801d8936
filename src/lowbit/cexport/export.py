"""``export_c`` and the ``lowbit export-c`` command (see the package docstring)."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from lowbit.cexport.lower import Unsupported, lower

__all__ = ["export_c", "Unsupported", "kernel_headers"]

HEADERS = ("lowbit_mcu.h", "lowbit_mcu_binary.h")


def kernel_headers() -> list[Path]:
    """The kernel headers: next to this package when installed with them, else csrc/mcu of
    the source tree."""
    for base in (Path(__file__).parent, Path(__file__).resolve().parents[3] / "csrc" / "mcu"):
        paths = [base / h for h in HEADERS]
        if all(p.exists() for p in paths):
            return paths
    raise FileNotFoundError(f"export-c: kernel headers {', '.join(HEADERS)} not found (csrc/mcu "
                            f"of the lowbit source tree)")


def export_c(path: str | os.PathLike, out_dir: str | os.PathLike, prefix: str = "lowbit") -> dict:
    """Write the C files of model file ``path`` into ``out_dir``; returns a report:
    ``arena_bytes``, ``const_bytes``, ``steps`` (one line each), ``files``, ``traced`` (the
    binary layers in LOWBIT_TRACE id order), ``output_size``."""
    from lowbit.cexport.emit import header, source
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix):
        raise ValueError(f"export-c: prefix {prefix!r} is not a C identifier")
    low = lower(os.fspath(path))
    name = Path(path).name
    text, arena, lines = source(low, prefix, name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{prefix}_model.c", out / f"{prefix}_model.h"]
    files[0].write_text(text)
    files[1].write_text(header(low, prefix, arena, name))
    for h in kernel_headers():
        shutil.copyfile(h, out / h.name)
        files.append(out / h.name)
    return {"arena_bytes": arena, "const_bytes": low.flash_consts, "steps": lines,
            "files": [str(f) for f in files], "traced": list(low.traced),
            "output_size": low.output.shape[0], "input_shape": list(low.input.shape)}


def command(args) -> int:
    """The CLI handler: ``lowbit export-c MODEL --out DIR [--prefix NAME]``."""
    import sys
    from lowbit.codec.container import FormatError
    try:
        rep = export_c(args.file, args.out, args.prefix)
    except (Unsupported, FormatError, OSError, ValueError) as e:
        print(f"lowbit export-c: {e}", file=sys.stderr)
        return 2
    for line in rep["steps"]:
        print(f"  {line}")
    print(f"wrote {', '.join(Path(f).name for f in rep['files'])} to {args.out}: "
          f"{rep['const_bytes']:,} bytes of constants (flash), {rep['arena_bytes']:,} bytes of "
          f"arena (RAM); int {args.prefix}_predict(const uint8_t *input, float *output)")
    return 0
