"""The frozen program's entry point: the same console script ``pip install`` makes."""

from ark_lattice.cli.app import main

main()
