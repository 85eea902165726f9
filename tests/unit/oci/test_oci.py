import hashlib
import json

import pytest

from dockyard.oci import mediatypes as mt
from dockyard.oci.digest import Digest, InvalidDigest, compute
from dockyard.oci.manifest import MAX_MANIFEST_BYTES, ManifestInvalid, parse
from dockyard.oci.names import is_valid_name, is_valid_tag

HEX = "a" * 64


def test_digest_parse_and_compute():
    d = Digest.parse("sha256:" + HEX)
    assert (d.algorithm, d.hex, str(d)) == ("sha256", HEX, "sha256:" + HEX)
    assert str(compute(b"x")) == "sha256:" + hashlib.sha256(b"x").hexdigest()
    assert str(compute(b"x", "sha512")) == "sha512:" + hashlib.sha512(b"x").hexdigest()


@pytest.mark.parametrize("bad", ["", "sha256", "sha256:", "sha256:" + "a" * 63, "sha256:" + "A" * 64,
                                 "md5:" + "a" * 32, "sha512:" + HEX, "sha256:../../etc", "SHA256:" + HEX])
def test_digest_rejects(bad):
    with pytest.raises(InvalidDigest):
        Digest.parse(bad)


@pytest.mark.parametrize("name", ["a", "library/ubuntu", "a.b/c_d/e__f/g-h", "x" * 255, "a--b"])
def test_valid_names(name):
    assert is_valid_name(name)


@pytest.mark.parametrize("name", ["", "A", "a/", "/a", "a//b", "a/../b", "..", "a/./b", "-a", "a-", "a_", "x" * 256,
                                  "a b", "a\x00b", "a___b"])
def test_invalid_names(name):
    assert not is_valid_name(name)


def test_tags():
    assert is_valid_tag("v1.0_rc-1") and is_valid_tag("_x") and is_valid_tag("a" * 128)
    assert not is_valid_tag(".INVALID_MANIFEST_NAME")
    assert not is_valid_tag("a" * 129) and not is_valid_tag("") and not is_valid_tag("a/b")


def _desc(mt_, data=b"x", **extra):
    return {"mediaType": mt_, "digest": str(compute(data)), "size": len(data), **extra}


def test_parse_image_manifest_with_subject_and_foreign_layer():
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": _desc("application/vnd.oci.image.config.v1+json"),
           "layers": [_desc("application/vnd.oci.image.layer.v1.tar+gzip", b"l1"),
                      _desc(next(iter(mt.FOREIGN_LAYERS)), b"f", urls=["https://example.com/f"])],
           "subject": _desc(mt.OCI_MANIFEST, b"s"), "annotations": {"k": "v"}}
    p = parse(json.dumps(doc).encode(), mt.OCI_MANIFEST)
    assert p.media_type == mt.OCI_MANIFEST and not p.is_index
    assert [d.digest for d in p.blobs] == [str(compute(b"x")), str(compute(b"l1"))]
    assert p.subject.digest == str(compute(b"s"))
    assert p.artifact_type == "application/vnd.oci.image.config.v1+json"
    assert p.annotations == {"k": "v"}


def test_parse_index_and_artifact_type():
    doc = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "artifactType": "a/b",
           "manifests": [_desc(mt.OCI_MANIFEST, b"c1", platform={"os": "linux", "architecture": "amd64"})]}
    p = parse(json.dumps(doc).encode(), None)
    assert p.is_index and [c.digest for c in p.children] == [str(compute(b"c1"))] and p.artifact_type == "a/b"


def test_media_type_inferred_without_declaration():
    doc = {"schemaVersion": 2, "config": _desc("c"), "layers": []}
    assert parse(json.dumps(doc).encode(), mt.DOCKER_MANIFEST).media_type == mt.DOCKER_MANIFEST
    assert parse(json.dumps(doc).encode(), None).media_type == mt.OCI_MANIFEST


@pytest.mark.parametrize("doc,ctype", [
    ({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": {"mediaType": "c", "digest": "x", "size": 1},
      "layers": []}, None),
    ({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": {"mediaType": "c", "size": 1}, "layers": []}, None),
    ({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": {"digest": "sha256:" + HEX, "size": 1},
      "layers": []}, None),
    ({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": {"mediaType": "c", "digest": "sha256:" + HEX,
                                                                    "size": True}, "layers": []}, None),
    ({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "layers": []}, None),
    ({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": {}}, None),
    ({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}, mt.OCI_MANIFEST),
    ({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"}, None),
    ({"schemaVersion": 1}, None),
])
def test_parse_rejects(doc, ctype):
    with pytest.raises(ManifestInvalid):
        parse(json.dumps(doc).encode(), ctype)


def test_parse_rejects_size_and_garbage():
    with pytest.raises(ManifestInvalid):
        parse(b" " * (MAX_MANIFEST_BYTES + 1))
    with pytest.raises(ManifestInvalid):
        parse(b"\xff\xfe")
