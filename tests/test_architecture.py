"""The code shape of DESIGN.md §2, checked by the README's test command as well as by CI (.ci/run):

- the import rules, as import-linter contracts in pyproject.toml (`[tool.importlinter]`): connectors never import
  syncd, sandboxes import neither, planning and model import nothing that does I/O, the layers of syncd, no cycles;
- the complexity gate: no function, method or class of syncd, connectors or sandboxes ranked D or worse by radon
  (cyclomatic complexity above 20), the same blocks `radon cc -n D syncd connectors sandboxes` lists.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from radon.complexity import cc_rank, cc_visit

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("syncd", "connectors", "sandboxes")

# `lint-imports`, run with this interpreter (its script may not be on PATH); it reads pyproject.toml in `ROOT`.
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def test_import_rules_hold() -> None:
    run = subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, f"lint-imports found broken import rules:\n{run.stdout}{run.stderr}"


def _blocks() -> Iterator[tuple[Path, Any]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for block in cc_visit(path.read_text(encoding="utf-8")):
                yield path.relative_to(ROOT), block


def test_no_block_is_ranked_d_or_worse() -> None:
    too_complex = [
        f"{path}:{block.lineno} {block.fullname} - {cc_rank(block.complexity)} ({block.complexity})"
        for path, block in _blocks()
        if cc_rank(block.complexity) not in ("A", "B", "C")
    ]
    assert not too_complex, "ranked D or worse by radon; split into small named steps:\n" + "\n".join(too_complex)


def test_the_complexity_gate_sees_every_package() -> None:
    # A gate that reads no file passes vacuously: make sure it reads the code it guards.
    seen = {path.parts[0] for path, _ in _blocks()}
    assert seen == set(PACKAGES)
