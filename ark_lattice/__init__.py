"""ark-lattice: a sovereign peer node sharing signed knowledge packets."""

__all__ = ["__version__", "PROTOCOL_VERSION"]

__version__ = "0.1.0"

#: Version of the signed encodings and of the wire protocol; it is part of every
#: domain-separation prefix, so a signature made under one version never verifies under another.
PROTOCOL_VERSION = 1
