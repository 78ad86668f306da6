"""The policy engine loads CEL without the ``cel`` package's interactive shell (start-up time)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.strip()


def test_policy_engine_does_not_load_the_cel_shell() -> None:
    out = _run(
        "import sys\n"
        "from ark_lattice.policy import Policy\n"
        "decision = Policy.default()\n"
        "print(sorted(m for m in ('cel.cli', 'prompt_toolkit', 'pygments') if m in sys.modules))\n"
    )
    assert out == "[]"


def test_the_real_cel_shell_still_imports_afterwards() -> None:
    out = _run(
        "import ark_lattice.policy\n"
        "import cel.cli\n"
        "print(hasattr(cel.cli, 'PromptSession'), cel.compile('1 + 1').execute() == 2)\n"
    )
    assert out == "True True"
