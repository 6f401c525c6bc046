"""The committed generated modules of proto/rpc must be what `python -m proto.rpc.generate` writes now."""


from proto.rpc import generate


def test_generated_code_is_current(tmp_path):
    written = generate.generate(tmp_path)
    assert written, "no .proto files found"
    stale = []
    for name in generate.generated_names():
        committed = generate.REPO_ROOT / name
        fresh = tmp_path / name
        assert fresh.exists(), f"generator did not write {name}"
        if not committed.exists() or committed.read_bytes() != fresh.read_bytes():
            stale.append(name)
    assert not stale, f"stale generated files (run `python -m proto.rpc.generate`): {stale}"


def test_service_is_versioned():
    from proto.rpc import tidelog_v1_pb2 as pb

    assert pb.DESCRIPTOR.package == "tidelog.v1"
    assert set(pb.DESCRIPTOR.services_by_name) == {"AdminService", "LogService", "ClusterService"}


def test_error_codes_are_kafkas():
    from proto.rpc import tidelog_v1_pb2 as pb

    # Same names and numbers as Kafka's Errors.java for the ones a front door maps.
    expected = {"NONE": 0, "UNKNOWN_SERVER_ERROR": -1, "OFFSET_OUT_OF_RANGE": 1, "CORRUPT_MESSAGE": 2,
                "UNKNOWN_TOPIC_OR_PARTITION": 3, "MESSAGE_TOO_LARGE": 10, "RECORD_LIST_TOO_LARGE": 18,
                "INVALID_REQUIRED_ACKS": 21, "TOPIC_ALREADY_EXISTS": 36, "INVALID_PARTITIONS": 37,
                "INVALID_CONFIG": 40, "INVALID_REQUEST": 42, "KAFKA_STORAGE_ERROR": 56, "INVALID_RECORD": 87}
    for name, number in expected.items():
        assert pb.ErrorCode.Value(name) == number
