"""The ``ark-lattice`` command tree: one Typer sub-app per command group, joined in app.py."""
