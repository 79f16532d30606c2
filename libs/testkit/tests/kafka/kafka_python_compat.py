"""Kafka compatibility checks with kafka-python against a Runnel broker's
Kafka listener. Run by libs/testkit/tests/kafka.rs:

    python kafka_python_compat.py SCENARIO BOOTSTRAP
"""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
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


def scenario_transactions_fail_fast(bootstrap):
    """Transactions are not supported yet: a transactional producer fails at
    once with TRANSACTIONAL_ID_AUTHORIZATION_FAILED instead of retrying until
    its timeout."""
    from kafka.errors import TransactionalIdAuthorizationFailedError

    start = time.monotonic()
    try:
        p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="kp-tx")
        p.init_transactions()
        raise AssertionError("init_transactions succeeded")
    except TransactionalIdAuthorizationFailedError:
        pass
    took = time.monotonic() - start
    assert took < 10, f"the refusal took {took:.1f}s"


def main():
    scenario, bootstrap = sys.argv[1], sys.argv[2]
    globals()[f"scenario_{scenario}"](bootstrap)


if __name__ == "__main__":
    main()
