"""The whole configuration crosses to worker processes as one JSON text (config.dumps/loads)."""

from dockyard.config import dumps, from_values, gather, loads


def test_every_setting_round_trips_through_json(tmp_path):
    f = tmp_path / "d.toml"
    f.write_text('immutable_tags = ["prod/*:v*", "base:*"]\nscrub_time = "2d"\n'
                 '[auth_roles]\nalice = "admin"\n'
                 '[retention.nightly]\nrepositories = ["team/*"]\nkeep_recent = 3\nkeep_pushed_within = "30d"\n')
    values = gather(f, env={"DOCKYARD_GC_DELAY": "15m", "DOCKYARD_S3_PATH_STYLE": "yes"}, workers=2)
    parent = from_values(values)
    worker = loads(dumps(values))
    assert worker == parent
    assert worker.immutable_tags == ("prod/*:v*", "base:*")
    assert worker.retention["nightly"].keep_recent == 3 and worker.gc_delay == 900 and worker.workers == 2
