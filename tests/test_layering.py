"""The import rules of the architecture (DEVELOPERS.md), checked on every import statement of
the source tree -- module level and inside functions -- and once at run time.

    train -> codec <- runtime;  detect and bench sit above;  nothing imports cli.

- codec imports neither torch nor runtime nor train (numpy only);
- runtime and data import neither torch nor train;
- train does not import runtime (nor detect or bench, which sit above it);
- detect (tracking, speed, decoding) imports neither torch nor train;
- cexport (the C export) imports neither torch nor train nor the runtime (numpy + codec);
- nothing imports lowbit.cli (but lowbit/__main__.py, the ``python -m lowbit`` entry point).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lowbit"

RULES = {          # package -> module prefixes its code must never import
    "codec": ("torch", "lowbit.runtime", "lowbit.train", "lowbit.cli"),
    "runtime": ("torch", "lowbit.train", "lowbit.cli"),
    "data": ("torch", "lowbit.train", "lowbit.runtime", "lowbit.cli"),
    "train": ("lowbit.runtime", "lowbit.detect", "lowbit.bench", "lowbit.cli"),
    "detect": ("torch", "lowbit.train", "lowbit.cli"),
    "cexport": ("torch", "lowbit.train", "lowbit.runtime", "lowbit.cli"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``."""
    pkg = ".".join(("lowbit",) + path.relative_to(SRC).parent.parts)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names if mod == "lowbit"]
    return out


def _violations() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        top = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        banned = RULES.get(top, ()) + (("lowbit.cli",) if rel.stem not in ("cli", "__main__")
                                       else ())
        for line, mod in _imports(path):
            for b in banned:
                if mod == b or mod.startswith(b + "."):
                    bad.append(f"src/lowbit/{rel}:{line} imports {mod} ({top} must not import {b})")
    return bad


def test_import_rules():
    assert _violations() == []


def test_the_checker_sees_violations(tmp_path, monkeypatch):
    """The rule check itself can fail: a planted import is reported."""
    fake = tmp_path / "lowbit"
    (fake / "codec").mkdir(parents=True)
    (fake / "codec" / "x.py").write_text("def f():\n    from ..runtime import graph\n    import torch\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    assert len(_violations()) == 2


@pytest.mark.parametrize("modules", ["lowbit.codec, lowbit.codec.graph, lowbit.codec.rewrite",
                                     "lowbit.runtime, lowbit.runtime.graph, lowbit.runtime.ops, "
                                     "lowbit.runtime.float_ops, lowbit.codec.packed",
                                     "lowbit.data"])
def test_torch_free_packages_load_without_torch(modules):
    code = (f"import sys; sys.modules['torch'] = None\nimport {modules}\n"
            f"from lowbit.runtime import Runtime")
    subprocess.run([sys.executable, "-c", code], check=True)
