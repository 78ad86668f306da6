"""House rule 1: the protocol core imports nothing that does I/O (DESIGN §2)."""

import pkgutil
import subprocess
import sys

import ark_lattice.protocol

IO_MODULES = {"asyncio", "websockets", "zeroconf", "aiosqlite", "socket", "selectors", "sqlite3"}


def test_the_protocol_core_imports_no_io():
    modules = [f"ark_lattice.protocol.{m.name}" for m in pkgutil.iter_modules(ark_lattice.protocol.__path__)]
    assert {"ark_lattice.protocol.session", "ark_lattice.protocol.handshake"} <= set(modules)
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"print(sorted(set({sorted(IO_MODULES)!r}) & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
