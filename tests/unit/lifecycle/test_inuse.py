import json

import pytest

from dockyard.lifecycle import inuse
from dockyard.oci.references import InvalidReference, parse_reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize("text,expected", [
    ("nginx", (None, "nginx", None, None)),
    ("team/app:v1", (None, "team/app", "v1", None)),
    ("127.0.0.1:5000/team/app:v1", ("127.0.0.1:5000", "team/app", "v1", None)),
    ("registry.local/team/app@" + D, ("registry.local", "team/app", None, D)),
    ("localhost/app:1@" + D, ("localhost", "app", "1", D)),
    ("docker-pullable://reg.io/x/y@" + D, ("reg.io", "x/y", None, D)),
])
def test_parse_reference(text, expected):
    r = parse_reference(text)
    assert (r.host, r.repository, r.tag, r.digest) == expected


@pytest.mark.parametrize("text", ["", "UPPER/case", "app:bad tag", "app@sha256:short", "a//b"])
def test_invalid_references(text):
    with pytest.raises(InvalidReference):
        parse_reference(text)


def test_kubectl_listing_and_plain_lists():
    pod = {"kind": "Pod", "metadata": {"name": "p", "namespace": "ns"},
           "spec": {"containers": [{"image": "reg:5000/team/web:v2"}], "initContainers": [{"image": "team/init"}]},
           "status": {"containerStatuses": [{"imageID": "docker-pullable://reg:5000/team/web@" + D}]}}
    cron = {"kind": "CronJob", "metadata": {"name": "c"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"image": "team/batch:nightly"}]}}}}}}
    listing = json.dumps({"kind": "List", "items": [pod, cron]})
    found = inuse.load([("k.json", listing), ("refs.txt", "team/a:1\n# comment\n\nteam/b@" + D + "\nNOT VALID\n")])
    tags, digests, _ = found.keys()
    assert tags == {("team/web", "v2"), ("team/init", "latest"), ("team/batch", "nightly"), ("team/a", "1")}
    assert digests == {("team/web", D), ("team/b", D)}
    assert found.invalid == [("NOT VALID", "refs.txt:5")]


def test_broken_json_is_invalid():
    found = inuse.load([("x", "{not json")])
    assert found.invalid and not found.refs
