"""Kafka compatibility checks with kafka-python against a Runnel broker's
Kafka listener. Run by libs/testkit/tests/kafka.rs:

    python kafka_python_compat.py SCENARIO BOOTSTRAP
"""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

TIMEOUT = 30


def scenario_admin(bootstrap):
    a = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT * 1000)
    a.create_topics([NewTopic("kp-admin", 2, 1, topic_configs={"retention.ms": "60000"})])
    try:
        a.create_topics([NewTopic("kp-admin", 2, 1)])
        raise AssertionError("a second create succeeded")
    except TopicAlreadyExistsError:
        pass
    assert "kp-admin" in a.list_topics()
    def configs():
        # Only keys set on the topic come back (kafka-python's default filter).
        described = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kp-admin")])
        return {k: v["value"] for k, v in described["topic"]["kp-admin"].items()}

    assert configs() == {"retention.ms": "60000"}, configs()
    # IncrementalAlterConfigs (kafka-python's default) changes only what it names.
    a.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, "kp-admin", configs={"segment.ms": "600000"})]
    )
    assert configs() == {"retention.ms": "60000", "segment.ms": "600000"}, configs()
    # AlterConfigs (kafka-python sends the other set keys along with it).
    a.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, "kp-admin", configs={"segment.ms": "700000"})],
        incremental=False,
    )
    assert configs() == {"retention.ms": "60000", "segment.ms": "700000"}, configs()
    a.create_partitions({"kp-admin": NewPartitions(3)})
    a.delete_topics(["kp-admin"])
    deadline = time.time() + TIMEOUT
    while "kp-admin" in a.list_topics():
        assert time.time() < deadline, "the deleted topic is still listed"
        time.sleep(0.2)
    try:
        a.delete_topics(["kp-admin"])
        raise AssertionError("deleting a missing topic succeeded")
    except UnknownTopicOrPartitionError:
        pass
    a.close()


def scenario_produce_consume(bootstrap):
    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    a.create_topics([NewTopic("kp-data", 1, 1)])
    a.close()
    expected = []
    for codec in [None, "gzip", "snappy", "lz4", "zstd"]:
        p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type=codec, linger_ms=10)
        futures = []
        for i in range(100):
            key = f"{codec}-{i}".encode()
            value = f"value {i}".encode() * 10
            ts = 1_700_000_000_000 + i
            futures.append(
                p.send("kp-data", key=key, value=value, headers=[("codec", str(codec).encode())], timestamp_ms=ts)
            )
            expected.append((key, value, ts))
        p.flush(TIMEOUT)
        for f in futures:
            f.get(TIMEOUT)
        p.close()
    c = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=10000)
    c.assign([TopicPartition("kp-data", 0)])
    c.seek_to_beginning()
    got = []
    deadline = time.time() + TIMEOUT
    while len(got) < len(expected) and time.time() < deadline:
        for records in c.poll(timeout_ms=500).values():
            got.extend(records)
    assert [(m.key, m.value, m.timestamp) for m in got] == expected, (len(got), len(expected))
    assert all(m.headers and m.headers[0][0] == "codec" for m in got)
    c.close()


def scenario_groups(bootstrap):
    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    a.create_topics([NewTopic("kp-group", 2, 1)])
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(50):
        p.send("kp-group", value=f"{i}".encode(), partition=i % 2)
    p.flush(TIMEOUT)

    def member():
        return KafkaConsumer(
            "kp-group",
            bootstrap_servers=bootstrap,
            group_id="kp-members",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )

    first, second = member(), member()
    seen = []
    deadline = time.time() + TIMEOUT
    while (len(seen) < 50 or not (first.assignment() and second.assignment())) and time.time() < deadline:
        for c in (first, second):
            for records in c.poll(timeout_ms=200).values():
                seen.extend(int(m.value) for m in records)
            if c.assignment():
                c.commit()
    assert first.assignment() and second.assignment(), (first.assignment(), second.assignment())
    assert sorted(seen) == list(range(50)), sorted(seen)
    first.close()
    second.close()
    for i in range(50, 60):
        p.send("kp-group", value=f"{i}".encode(), partition=i % 2)
    p.flush(TIMEOUT)
    again = member()
    got = []
    deadline = time.time() + TIMEOUT
    while len(got) < 10 and time.time() < deadline:
        for records in again.poll(timeout_ms=200).values():
            got.extend(int(m.value) for m in records)
    assert sorted(got) == list(range(50, 60)), got
    again.close()
    groups = [g["group_id"] for g in a.list_groups()]
    assert "kp-members" in groups, groups
    a.close()


def scenario_idempotent(bootstrap):
    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    a.create_topics([NewTopic("kp-idem", 1, 1)])
    p = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    futures = [p.send("kp-idem", value=f"{i}".encode()) for i in range(500)]
    p.flush(TIMEOUT)
    offsets = [f.get(TIMEOUT).offset for f in futures]
    assert offsets == list(range(500)), offsets[:10]
    # The partition knows the producer (DescribeProducers).
    described = a.describe_producers([TopicPartition("kp-idem", 0)])
    text = repr(described)
    assert "producer_id" in text and "last_sequence" in text, text
    p.close()
    a.close()


def read_values(bootstrap, topic, partitions, level):
    """The values of `topic` a consumer at isolation `level` reads from the
    start, in order, until nothing new comes for 3 s; and the end offset of
    each partition it is told (read_committed: the last stable offset)."""
    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level=level,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    values = [m.value.decode() for m in c]
    ends = c.end_offsets(tps)
    c.close()
    return values, [ends[tp] for tp in tps]


def scenario_transactions(bootstrap):
    """A transactional producer commits and aborts; read_committed readers
    see only the committed records; a second producer with the same
    transactional_id fences the first."""
    from kafka.errors import KafkaError

    a = KafkaAdminClient(bootstrap_servers=bootstrap)
    a.create_topics([NewTopic("kp-tx", num_partitions=2, replication_factor=1)])
    a.close()

    def read(level):
        return sorted(read_values(bootstrap, "kp-tx", 2, level)[0])

    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="kp-tx-1")
    p.init_transactions()
    p.begin_transaction()
    for i in range(4):
        p.send("kp-tx", value=f"c{i}".encode(), partition=i % 2)
    p.commit_transaction()
    p.begin_transaction()
    for i in range(3):
        p.send("kp-tx", value=f"a{i}".encode(), partition=i % 2)
    p.flush()
    p.abort_transaction()
    committed = [f"c{i}" for i in range(4)]
    assert read("read_committed") == committed, read("read_committed")
    assert read("read_uncommitted") == sorted(committed + [f"a{i}" for i in range(3)])

    p2 = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="kp-tx-1")
    p2.init_transactions()
    try:
        p.begin_transaction()
        p.send("kp-tx", value=b"zombie", partition=0)
        p.commit_transaction()
        raise AssertionError("the fenced producer committed")
    except KafkaError:
        pass
    p2.begin_transaction()
    p2.send("kp-tx", value=b"p2", partition=1)
    p2.commit_transaction()
    final = read("read_committed")
    assert "zombie" not in final and "p2" in final, final
    p2.close()


def scenario_old_versions(bootstrap):
    """Clients pinned to the versions Kafka 4.0 dropped (kafka-python with
    api_version set picks its versions without asking ApiVersions):
    CreateTopics v0 and v1, Produce v0-2 in message formats v0/v1 (plain and
    compressed), Fetch v0-3 reading everything back in the format each
    knows, OffsetCommit v1 and DescribeConfigs v0."""
    a = KafkaAdminClient(bootstrap_servers=bootstrap, api_version=(0, 10, 1))  # CreateTopics v0
    a.create_topics([NewTopic("kp-old", 1, 1)])
    a.close()
    a = KafkaAdminClient(bootstrap_servers=bootstrap, api_version=(0, 10, 2))  # CreateTopics v1
    a.create_topics([NewTopic("kp-old-configs", 1, 1, topic_configs={"retention.ms": "60000"})])
    try:
        a.create_topics([NewTopic("kp-old", 1, 1)])
        raise AssertionError("a second create succeeded")
    except TopicAlreadyExistsError:
        pass
    a.close()
    a = KafkaAdminClient(bootstrap_servers=bootstrap, api_version=(0, 11))  # DescribeConfigs v0
    described = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "kp-old-configs")])
    configs = {k: v["value"] for k, v in described["topic"]["kp-old-configs"].items()}
    assert configs.get("retention.ms") == "60000", configs
    a.close()

    expected = []  # (key, value, timestamp or None when the format has none)
    # (0, 8, 2): Produce v0, magic 0; (0, 9): v1, magic 0; (0, 10, 1): v2, magic 1.
    for api_version, codec in [
        ((0, 8, 2), None),
        ((0, 9), None),
        ((0, 9), "gzip"),
        ((0, 10, 1), None),
        ((0, 10, 1), "gzip"),
        ((0, 10, 1), "snappy"),
        ((0, 10, 1), "lz4"),
    ]:
        p = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", api_version=api_version, compression_type=codec, linger_ms=10
        )
        futures = []
        for i in range(20):
            key = f"{api_version}-{codec}-{i}".encode()
            value = f"value {i}".encode() * 5
            ts = 1_700_000_000_000 + len(expected)
            futures.append(p.send("kp-old", key=key, value=value, timestamp_ms=ts))
            expected.append((key, value, ts if api_version >= (0, 10) else None))
        p.flush(TIMEOUT)
        for f in futures:
            f.get(TIMEOUT)
        p.close()
    # A current producer's records (headers, which the old formats drop).
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(5):
        key, value, ts = f"now-{i}".encode(), b"now", 1_700_000_100_000 + i
        p.send("kp-old", key=key, value=value, headers=[("h", b"x")], timestamp_ms=ts).get(TIMEOUT)
        expected.append((key, value, ts))
    p.close()

    # (0, 8, 2): Fetch v0 (magic 0); (0, 9): v1 (magic 0); (0, 10, 0): v2 and
    # (0, 10, 1): v3 (magic 1, timestamps).
    tp = TopicPartition("kp-old", 0)
    for api_version in [(0, 8, 2), (0, 9), (0, 10, 0), (0, 10, 1)]:
        c = KafkaConsumer(bootstrap_servers=bootstrap, api_version=api_version, enable_auto_commit=False)
        c.assign([tp])
        c.seek(tp, 0)
        got = []
        deadline = time.time() + TIMEOUT
        while len(got) < len(expected) and time.time() < deadline:
            for records in c.poll(timeout_ms=500).values():
                got.extend(records)
        old_format = api_version < (0, 10)
        want = [(k, v, None if old_format else ts) for k, v, ts in expected]
        seen = [(m.key, m.value, None if m.timestamp in (None, -1) else m.timestamp) for m in got]
        assert seen == want, (api_version, len(seen), len(want), seen[:3], want[:3])
        assert [m.offset for m in got] == list(range(len(expected))), api_version
        c.close()

    # OffsetCommit v1 and OffsetFetch v1 with a group but no group management.
    c = KafkaConsumer(
        bootstrap_servers=bootstrap, api_version=(0, 8, 2), group_id="kp-old-group", enable_auto_commit=False
    )
    c.assign([tp])
    c.seek(tp, 0)
    c.commit({tp: OffsetAndMetadata(42, "", -1)})
    assert c.committed(tp) == 42, c.committed(tp)
    c.close()


def scenario_read_committed(bootstrap):
    """As confluent_compat.py's: topic `txn` read at both isolation levels,
    printed as one JSON line of the values and end offset each saw."""
    import json

    out = {}
    for level in ("read_committed", "read_uncommitted"):
        values, ends = read_values(bootstrap, "txn", 1, level)
        out[level] = {"values": values, "end": ends[0]}
    print(json.dumps(out))


def main():
    scenario, bootstrap = sys.argv[1], sys.argv[2]
    globals()[f"scenario_{scenario}"](bootstrap)


if __name__ == "__main__":
    main()
