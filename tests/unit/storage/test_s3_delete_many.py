"""The S3 driver's delete_many against scripted DeleteObjects answers (botocore's Stubber):
per-key errors from the response's ``Errors``, a call that fails as a whole, the 1,000-key cap."""

import boto3
import pytest
from botocore.stub import Stubber

from dockyard.storage.base import StorageError
from dockyard.storage.s3 import S3Driver


@pytest.fixture
def stubbed():
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    driver = S3Driver("bkt", prefix="reg", client=client)
    with Stubber(client) as stub:
        yield driver, stub
        stub.assert_no_pending_responses()


def _expect(stub, keys, errors=()):
    stub.add_response("delete_objects", {"Errors": list(errors)} if errors else {},
                      {"Bucket": "bkt", "Delete": {"Objects": [{"Key": f"reg/{k}"} for k in keys], "Quiet": True}})


def test_per_key_errors_come_from_the_response(stubbed):
    driver, stub = stubbed
    keys = ["blobs/sha256/aa/1", "blobs/sha256/aa/2", "blobs/sha256/aa/3"]
    _expect(stub, keys, [{"Key": "reg/blobs/sha256/aa/2", "Code": "AccessDenied", "Message": "Access Denied"},
                         {"Key": "reg/blobs/sha256/aa/3", "Code": "NoSuchKey", "Message": "gone already"}])
    result = driver.delete_many(keys)
    assert result["blobs/sha256/aa/1"] is None
    assert result["blobs/sha256/aa/3"] is None  # missing is not an error
    err = result["blobs/sha256/aa/2"]
    assert isinstance(err, StorageError) and err.key == "blobs/sha256/aa/2" and "AccessDenied" in str(err)


def test_a_failed_call_is_the_error_of_each_of_its_keys(stubbed):
    driver, stub = stubbed
    keys = [f"blobs/sha256/aa/{i}" for i in range(1500)]
    _expect(stub, keys[:1000])
    stub.add_client_error("delete_objects", service_error_code="SlowDown", http_status_code=503)
    result = driver.delete_many(keys)
    assert all(result[k] is None for k in keys[:1000])
    assert all(isinstance(result[k], StorageError) and "SlowDown" in str(result[k]) for k in keys[1000:])


def test_at_most_1000_keys_a_call(stubbed):
    driver, stub = stubbed
    keys = [f"blobs/sha256/ab/{i}" for i in range(2001)]
    for i in range(0, 2001, 1000):
        _expect(stub, keys[i:i + 1000])
    assert driver.delete_many(keys) == {k: None for k in keys}
