"""The asyncio runtime: the only code that owns sockets, tasks, timers and signals (DESIGN §2)."""
