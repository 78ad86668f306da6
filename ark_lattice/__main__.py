from ark_lattice.cli.app import main

main()
