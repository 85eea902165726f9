"""Access rules (dockyard.access): the role of a user on a repository, parsed from the settings."""

import pytest

from dockyard import config
from dockyard.access import (Access, actions_of_role, parse_groups, parse_rules, parse_scopes,
                             role_of_actions)
from dockyard.values import ConfigError

TOML = '''
auth_htpasswd = "/nonexistent"
auth_roles = { root = "admin", reader = "pull" }
[groups]
team-a = ["alice", "bob"]
team-b = ["carol"]
[[access]]
repositories = "team-a/*"
groups = ["team-a"]
role = "push"
[[access]]
repositories = ["team-b/*", "shared/tools"]
groups = ["team-b"]
users = ["dave"]
role = "push"
[[access]]
repositories = "*"
users = ["*"]
role = "pull"
[[access]]
repositories = "public/*"
users = ["anonymous"]
role = "pull"
'''


@pytest.fixture
def policy(tmp_path) -> Access:
    path = tmp_path / "c.toml"
    path.write_text(TOML)
    return config.load(path, env={}).access_policy


@pytest.mark.parametrize("user,repository,role", [
    ("alice", "team-a/app", "push"),
    ("alice", "team-a/deep/app", "push"),   # * crosses /
    ("alice", "team-a", "pull"),            # team-a/* is what is under team-a, not team-a itself
    ("alice", "team-b/app", "pull"),        # the "*" rule: every signed-in user pulls everything
    ("carol", "team-b/app", "push"),
    ("carol", "team-a/app", "pull"),
    ("dave", "shared/tools", "push"),
    ("dave", "shared/toolsx", "pull"),
    ("root", "anything", "admin"),          # a global role applies to every repository
    ("reader", "team-a/app", "pull"),
    ("reader", "team-a/app", "pull"),
    (None, "public/x", "pull"),             # anonymous
    (None, "team-a/app", "none"),
])
def test_role_on_a_repository(policy, user, repository, role):
    assert policy.role(user, repository) == role


def test_global_role_and_default(policy):
    assert policy.global_role("alice") == "none"  # access rules exist: the default role is none
    assert policy.global_role("root") == "admin"
    assert policy.global_role(None) == "none"
    assert policy.best_role("alice") == "push" and policy.best_role(None) == "pull"
    assert policy.restricted("alice") and not policy.restricted("root")


def test_without_rules_the_global_roles_are_unchanged():
    cfg = config.load(None, env={"DOCKYARD_AUTH_HTPASSWD": "/x", "DOCKYARD_AUTH_ROLES": "bob=pull"})
    p = cfg.access_policy
    assert p.role("bob", "any/repo") == "pull" and p.role("eve", "any/repo") == "push"
    assert p.role(None, "any/repo") == "none"
    cfg = config.load(None, env={"DOCKYARD_AUTH_HTPASSWD": "/x", "DOCKYARD_AUTH_DEFAULT_ROLE": "pull",
                                 "DOCKYARD_ACCESS": '[{"repositories": "a/*", "users": ["eve"], "role": "push"}]'})
    assert cfg.access_policy.role("eve", "a/b") == "push" and cfg.access_policy.role("eve", "c") == "pull"


def test_environment_takes_json_and_round_trips():
    values = config.gather(None, env={"DOCKYARD_GROUPS": '{"g": ["u"]}',
                                      "DOCKYARD_ACCESS": '[{"repositories": "x/*", "groups": ["g"], "role": "pull"}]'})
    parent = config.from_values(values)
    assert config.loads(config.dumps(values)) == parent
    assert parent.access_policy.role("u", "x/y") == "pull"


@pytest.mark.parametrize("doc,message", [
    ([{"repositories": "a/*", "users": ["x"], "role": "owner"}], "role must be"),
    ([{"repositories": "a/*", "role": "pull"}], "names no users"),
    ([{"users": ["x"], "role": "pull"}], "names no repositories"),
    ([{"repositories": [], "users": ["x"], "role": "pull"}], "must not be empty"),
    ([{"repositories": "a", "users": ["x"], "role": "pull", "tags": "*"}], "unknown keys"),
    ([{"repositories": "a", "users": [""], "role": "pull"}], "non-empty"),
    ("not json", "must be JSON"),
    (42, "must be a list"),
])
def test_bad_rules_are_refused(doc, message):
    with pytest.raises(ConfigError, match=message):
        parse_rules(doc)


def test_unknown_group_and_bad_groups_are_refused():
    with pytest.raises(ConfigError, match="nope"):
        config.from_values({"access": [{"repositories": "a", "groups": ["nope"], "role": "pull"}]})
    with pytest.raises(ConfigError):
        parse_groups({"g": "alice"} | {"h": [1]})
    assert parse_groups({"g": "alice"}) == {"g": ("alice",)}


def test_scopes_and_actions():
    assert parse_scopes(["repository:a/b:pull,push", "repository:c:pull registry:catalog:*",
                         "repository:a/b:delete", "junk", "repository::pull", "repository:Bad Name:pull",
                         "repository:d:bogus"]) == {"a/b": {"pull", "push", "delete"}, "c": {"pull"}}
    many = parse_scopes([f"repository:r{i}:pull" for i in range(1000)])
    assert len(many) == 64 and "r0" in many
    assert actions_of_role("pull", {"pull", "push"}) == ["pull"]
    assert actions_of_role("push", {"pull", "push", "*"}) == ["pull", "push"]
    assert actions_of_role("none", {"pull"}) == []
    assert role_of_actions(["pull"]) == "pull" and role_of_actions(["pull", "push"]) == "push"
    assert role_of_actions([]) == "none" and role_of_actions(["bogus"]) == "none"


# /admin routes that are not global-admin, each for a stated reason
ADMIN_EXCEPTIONS = {
    "/admin/v1/openapi.json": ("global", "pull"),  # the API's description: no secret to a signed-in user
}


def test_every_route_checks_its_role_where_it_acts():
    """Repository routes check the role on their repository, administration the global role:
    a route added without thinking about where would show up here."""
    from dockyard.api.app import routes

    for route in routes():
        if route.path == "/dashboard":  # its own login session: every page is @page (admin), tested there
            continue
        endpoint = route.endpoint
        where = getattr(endpoint, "required_where", None)
        role = getattr(endpoint, "required_role", None)
        if route.path in ("/healthz", "/readyz", "/auth/token"):
            assert where is None, route.path
        elif route.path.startswith("/v2/{name"):
            assert where == "repository" and role in ("pull", "push"), route.path
        elif role == "host":  # api/hosts.host_call: an admin, or the host named in the path with its token
            assert route.path.startswith("/admin/v1/hosts/{host}/"), route.path
        elif route.path in ADMIN_EXCEPTIONS:
            assert (where, role) == ADMIN_EXCEPTIONS[route.path], route.path
        elif route.path.startswith("/admin/"):
            assert where == "global" and role == "admin", route.path
        elif route.path == "/v2/":
            assert where == "ping" and role == "pull"
        elif route.path == "/v2/_catalog":
            assert where == "somewhere" and role == "pull"
        else:
            assert where == "global", route.path
