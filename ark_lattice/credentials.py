"""Secrets systemd hands the node: ``LoadCredential=`` / ``LoadCredentialEncrypted=`` (systemd.exec(5)).

systemd decrypts an encrypted credential (``systemd-creds encrypt``, bound to the host's TPM2 or
its credential secret) into a private, read-only directory named by ``$CREDENTIALS_DIRECTORY``,
visible to the service alone. The node's sealed key passphrase is the credential ``passphrase``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ark_lattice.errors import UsageError

__all__ = ["PASSPHRASE_CREDENTIAL", "CREDENTIALS_ENV", "systemd_credential"]

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
PASSPHRASE_CREDENTIAL = "passphrase"


def systemd_credential(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The credential ``name`` without its trailing newline, or None when systemd passed none."""
    directory = (os.environ if env is None else env).get(CREDENTIALS_ENV)
    if not directory:
        return None
    path = Path(directory) / name
    try:
        return path.read_text().rstrip("\r\n")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"cannot read the systemd credential {path}: {reason}") from None
