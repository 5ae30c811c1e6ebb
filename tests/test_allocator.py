"""syncd fixes glibc's mmap threshold when it starts (syncd.allocator), unless the operator set it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

CHECK = textwrap.dedent(
    """
    import sys
    from syncd.allocator import fix_mmap_threshold
    print(fix_mmap_threshold())
    """
)


def _run(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=env, check=True)
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is Linux's")
def test_the_threshold_is_fixed_on_glibc() -> None:
    libc, _ = platform.libc_ver()
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    assert _run(env) == ("True" if libc == "glibc" else "False")


def test_an_operators_own_setting_is_left_alone() -> None:
    assert _run({**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}) == "False"
