import pytest

from ark_lattice.errors import ConfigError, NotInitialised
from ark_lattice.home import DEFAULT_PORT, Config, Home


def test_home_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("ARK_LATTICE_HOME", str(tmp_path / "env"))
    assert Home.resolve(str(tmp_path / "opt")).root == tmp_path / "opt"
    assert Home.resolve().root == tmp_path / "env"
    monkeypatch.delenv("ARK_LATTICE_HOME")
    assert "ark-lattice" in str(Home.resolve().root)


def test_config_round_trip_and_errors(tmp_path):
    config = Config(node_id="a" * 52, name="alpha", created_at=5)
    back = Config.from_toml(config.to_toml(), "x")
    assert back == config and back.federation.port == DEFAULT_PORT
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.from_toml("[node", "x")
    with pytest.raises(ConfigError, match="missing"):
        Config.from_toml("[node]\nname = 'a'\n", "x")
    with pytest.raises(ConfigError, match="port"):
        Config.from_toml(config.to_toml().replace(f"port = {DEFAULT_PORT}", "port = 70000"), "x")
    with pytest.raises(NotInitialised):
        Home(tmp_path / "empty").load_config()
