"""Fail when a module is over MAX_MODULE lines or a function over MAX_FUNCTION lines (docstring included).

Usage: python scripts/check_sizes.py [folders or .py files]   (default: the package, benchmarks/ and scripts/)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_MODULE = 400
MAX_FUNCTION = 60
DEFAULT = ["dermdiff_lora", "benchmarks", "scripts"]


def problems(path: Path) -> list[str]:
    text = path.read_text()
    found = []
    lines = len(text.splitlines())
    if lines > MAX_MODULE:
        found.append(f"{path}: {lines} lines (at most {MAX_MODULE}): split it by concern")
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = node.end_lineno - start + 1
            if length > MAX_FUNCTION:
                found.append(f"{path}:{node.lineno}: function {node.name} has {length} lines "
                             f"(at most {MAX_FUNCTION})")
    return found


def main(args: list[str]) -> int:
    missing = [a for a in args if not Path(a).exists()]
    if missing:
        print(f"check_sizes: no such file or folder: {', '.join(missing)}")
        return 2
    args = args or DEFAULT
    files = [f for a in args for f in ([Path(a)] if a.endswith(".py") else sorted(Path(a).rglob("*.py")))]
    if not files:
        print(f"check_sizes: no .py file under {', '.join(args)}: nothing was checked")
        return 2
    found = [p for f in files for p in problems(f)]
    print("\n".join(found) or f"sizes ok: {len(files)} files, modules <= {MAX_MODULE} lines, "
          f"functions <= {MAX_FUNCTION} lines")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
