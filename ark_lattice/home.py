"""The node's home directory: where its key, config, ledger and control socket live.

The default comes from platformdirs; ``--home DIR`` or ``ARK_LATTICE_HOME`` override it, which is
how a node runs from a USB stick (portable mode: everything the node owns is under one folder).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tomli_w

from ark_lattice.errors import ConfigError, HomeUnusable, NotInitialised

__all__ = ["Home", "Config", "FederationConfig", "DEFAULT_PORT", "HOME_ENV"]

HOME_ENV = "ARK_LATTICE_HOME"
DEFAULT_PORT = 7467  # unassigned by IANA; see docs/operator.md


@dataclass
class FederationConfig:
    bind: str = "0.0.0.0"
    port: int = DEFAULT_PORT


@dataclass
class Config:
    node_id: str
    name: str
    created_at: int  # Unix seconds
    federation: FederationConfig = field(default_factory=FederationConfig)

    def to_toml(self) -> str:
        doc = asdict(self)
        fed = doc.pop("federation")
        return tomli_w.dumps({"node": doc, "federation": fed})

    @classmethod
    def from_toml(cls, text: str, source: str) -> Config:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source} is not valid TOML: {exc}") from None
        node, fed = doc.get("node", {}), doc.get("federation", {})
        try:
            config = cls(
                node_id=str(node["node_id"]),
                name=str(node.get("name", "")),
                created_at=int(node["created_at"]),
                federation=FederationConfig(
                    bind=str(fed.get("bind", "0.0.0.0")), port=int(fed.get("port", DEFAULT_PORT))
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source} is missing or has a bad value for {exc}") from None
        if not 0 < config.federation.port < 65536:
            raise ConfigError(f"{source}: federation.port must be between 1 and 65535")
        return config


class Home:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @classmethod
    def resolve(cls, option: str | os.PathLike[str] | None = None) -> Home:
        if option:
            return cls(Path(option).expanduser().absolute())
        if env := os.environ.get(HOME_ENV):
            return cls(Path(env).expanduser().absolute())
        import platformdirs

        return cls(Path(platformdirs.user_data_dir("ark-lattice", appauthor=False)))

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def key_path(self) -> Path:
        return self.root / "identity.key"

    @property
    def federation_key_path(self) -> Path:
        return self.root / "federation.key"

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger.db"

    @property
    def policy_path(self) -> Path:
        return self.root / "policy.toml"

    @property
    def control_path(self) -> Path:
        return self.root / "control.sock"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def is_initialised(self) -> bool:
        return self.config_path.exists() and self.key_path.exists()

    def load_config(self) -> Config:
        try:
            text = self.config_path.read_text()
        except FileNotFoundError:
            raise NotInitialised(
                f"no node in {self.root}; run `ark-lattice init` or `ark-lattice federation start`"
            ) from None
        return Config.from_toml(text, str(self.config_path))

    def write_config(self, config: Config) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(config.to_toml())
        os.replace(tmp, self.config_path)

    def create(self) -> None:
        """Make the home directory, private to its owner."""
        self.check()
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise HomeUnusable(f"cannot create the home {self.root}: {exc.strerror}") from None
        if not self.writable():
            raise HomeUnusable(f"the home {self.root} is read-only; a node cannot be created in it")

    def check(self) -> None:
        """Refuse a home that is a file, or lies under one, in one sentence."""
        for path in (self.root, *self.root.parents):
            if path.exists():
                if not path.is_dir():
                    what = "is a file" if path == self.root else f"lies under {path}, a file"
                    raise HomeUnusable(f"the home {self.root} {what}, not a directory; choose another --home")
                return

    def writable(self) -> bool:
        """Whether this process can create files in the home (false on a read-only mount)."""
        return os.access(self.root, os.W_OK)
