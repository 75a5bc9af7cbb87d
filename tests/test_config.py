"""Config: defaults < config.yaml < ENGINE_* < flags; every bad value is one clear error naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import Config, ConfigError, load_config, render_yaml, settings

ROOT = Path(__file__).resolve().parent.parent


def test_defaults() -> None:
    c = load_config(Path(ROOT / "config.yaml"))
    assert c == Config()
    assert (c.server.host, c.server.port) == ("127.0.0.1", 3000)
    assert (c.limits.script_time_ms, c.limits.script_memory_mb) == (1000, 64)


def test_precedence(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("server:\n  port: 4000\n  host: 0.0.0.0\nlimits:\n  script_time_ms: 50\n")
    c = load_config(f, {"ENGINE_SERVER_PORT": "5000", "ENGINE_LOGS_ACCESS": "yes"}, {"server.port": "6000"})
    assert c.server.port == 6000 and c.server.host == "0.0.0.0"
    assert c.limits.script_time_ms == 50 and c.logs.access is True
    c = load_config(f, {"ENGINE_SERVER_PORT": "5000"}, {"server.port": None})
    assert c.server.port == 5000


@pytest.mark.parametrize(
    ("yaml_text", "env", "message"),
    [
        ("server:\n  port: abc\n", {}, "config key 'server.port' (from {f}): expected int, got 'abc'"),
        ("server:\n  port: -1\n", {}, "config key 'server.port' (from {f}): must be at least 0, got -1"),
        ("server:\n  prot: 1\n", {}, "config key 'server.prot' (from {f}): unknown setting"),
        ("limits: 5\n", {}, "config key 'limits' in {f}: must be a mapping of settings"),
        ("- a\n", {}, "config file {f}: the top level must be a mapping of sections"),
        ("server: [\n", {}, "config file {f}: not valid YAML"),
        ("logs:\n  level: loud\n", {}, "config key 'logs.level' (from {f}): must be one of debug, info, warning"),
        ("", {"ENGINE_LIMITS_SCRIPT_TIME_MS": "0"}, "config key 'limits.script_time_ms' (from environment)"),
        ("", {"ENGINE_LOGS_ACCESS": "maybe"}, "config key 'logs.access' (from environment): expected bool"),
        ("", {"ENGINE_NOPE": "1"}, "environment variable ENGINE_NOPE: unknown setting"),
        ("limits:\n  script_memory_mb: 1.5\n", {}, "expected int, got 1.5"),
        ("", {"ENGINE_STREAMS_FANOUT_SLICE": "0"}, "config key 'streams.fanout_slice' (from environment): must be at "
         "least 1, got 0"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, yaml_text: str, env: dict[str, str], message: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(f, env)
    assert message.format(f=f) in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(tmp_path / "nope.yaml")


def test_config_yaml_is_generated_from_the_table() -> None:
    assert (ROOT / "config.yaml").read_text() == render_yaml(), "regenerate: python -m engine.config > config.yaml"


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for s in settings():
        assert f"`{s.key}`" in readme, s.key
        assert s.env_var in readme or "ENGINE_<SECTION>_<KEY>" in readme


def test_privileged_scripts_as_a_list_or_names_with_commas(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("scripts:\n  dir: /srv/app/scripts\n  privileged: [editor.js, tools/deploy.js]\n")
    c = load_config(f)
    assert c.scripts.privileged == ("editor.js", "tools/deploy.js")
    assert c.assets_dir == Path("/srv/app/assets")  # beside the scripts folder unless set
    assert load_config(f, {"ENGINE_SCRIPTS_PRIVILEGED": " a.js, ,b/c.js "}).scripts.privileged == ("a.js", "b/c.js")
    assert load_config(f, {"ENGINE_ASSETS_DIR": "/srv/static"}).assets_dir == Path("/srv/static")
    with pytest.raises(ConfigError, match=r"scripts.privileged: '\.\./x\.js' is not a script name"):
        load_config(f, {"ENGINE_SCRIPTS_PRIVILEGED": "../x.js"})
    f.write_text("scripts:\n  privileged: {editor.js: true}\n")
    with pytest.raises(ConfigError, match="config key 'scripts.privileged'.*expected a list of names"):
        load_config(f)
