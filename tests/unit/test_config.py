import pytest

from dockyard.config import ConfigError, describe, load, parse_duration


def test_precedence_file_env_flags(tmp_path):
    f = tmp_path / "d.toml"
    f.write_text('listen = "127.0.0.1:6000"\nscrub_time = "2d"\nworkers = 3\n')
    cfg = load(f, env={"DOCKYARD_WORKERS": "4"})
    assert cfg.listen == "127.0.0.1:6000" and cfg.scrub_time == 2 * 86400 and cfg.workers == 4
    cfg = load(f, env={"DOCKYARD_WORKERS": "4"}, workers=5)
    assert cfg.workers == 5


def test_defaults_are_embedded(tmp_path):
    cfg = load(env={}, data_dir=str(tmp_path))
    assert cfg.effective_database_url == f"sqlite:///{tmp_path}/dockyard.db"
    assert cfg.effective_storage_root == tmp_path / "storage"
    assert cfg.effective_anonymous_role == "admin"
    assert load(env={"DOCKYARD_AUTH_HTPASSWD": "/x"}).effective_anonymous_role == "none"
    assert load(env={"DOCKYARD_DATABASE_URL": "postgresql://h/db"}).effective_database_url == \
        "postgresql+psycopg://h/db"


def test_roles_from_env_and_toml(tmp_path):
    assert load(env={"DOCKYARD_AUTH_ROLES": "a=admin, b=pull"}).auth_roles == {"a": "admin", "b": "pull"}
    f = tmp_path / "r.toml"
    f.write_text('[auth_roles]\nalice = "push"\n')
    assert load(f, env={}).auth_roles == {"alice": "push"}


@pytest.mark.parametrize("env", [{"DOCKYARD_AUTH_ROLES": "a=root"}, {"DOCKYARD_SCRUB_TIME": "soon"},
                                 {"DOCKYARD_LISTEN": "nohost"}, {"DOCKYARD_WORKERS": "many"}])
def test_bad_values_are_config_errors(env):
    with pytest.raises(ConfigError):
        load(env=env)


def test_unknown_key_in_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("no_such_setting = 1\n")
    with pytest.raises(ConfigError, match="no_such_setting"):
        load(f, env={})


def test_durations_and_help():
    assert parse_duration("90") == 90 and parse_duration("15m") == 900 and parse_duration("1w") == 604800
    assert parse_duration("250ms") == 0.25
    text = describe()
    assert "DOCKYARD_SCRUB_TIME" in text and "DOCKYARD_DATABASE_URL" in text


def test_sizes_beyond_what_a_database_integer_holds_are_refused():
    from dockyard.values import ConfigError, parse_size

    assert parse_size("4194304TiB") == 2 ** 62
    for too_big in ("999999999999999TiB", 2 ** 63, "4194305TiB"):
        with pytest.raises(ConfigError, match="larger than 4 EiB"):
            parse_size(too_big)
