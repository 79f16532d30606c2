"""Kafka compatibility checks with confluent-kafka (librdkafka) against a
Runnel broker's Kafka listener. Run by libs/testkit/tests/kafka.rs:

    python confluent_compat.py SCENARIO BOOTSTRAP

Each scenario asserts what a Kafka user relies on and exits non-zero with a
message when something differs. Topics are created here with the admin
client (the test cluster does not auto-create topics). Scenarios that
report data for the Rust side to check print one JSON line last.
"""

import json
import sys
import time

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    ConsumerGroupType,
    Consumer,
    KafkaError,
    KafkaException,
    OFFSET_BEGINNING,
    OFFSET_END,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

TIMEOUT = 30


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap})


def create(bootstrap, topic, partitions=1, config=None):
    a = admin(bootstrap)  # kept alive until the future resolves
    futures = a.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=TIMEOUT,
    )
    futures[topic].result(TIMEOUT)


def producer(bootstrap, **extra):
    config = {"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"}
    config.update(extra)
    return Producer(config)


def produce_all(p, topic, records):
    """Produces (key, value, headers, timestamp, partition) tuples; returns
    the delivery reports' (partition, offset) per record, failing on any error."""
    reports = [None] * len(records)
    errors = []

    def done(i):
        def callback(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                reports[i] = (msg.partition(), msg.offset())

        return callback

    for i, (key, value, headers, timestamp, partition) in enumerate(records):
        kwargs = {"key": key, "value": value, "on_delivery": done(i)}
        if headers is not None:
            kwargs["headers"] = headers
        if timestamp is not None:
            kwargs["timestamp"] = timestamp
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                p.produce(topic, **kwargs)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(TIMEOUT)
    assert left == 0, f"{left} records not delivered within {TIMEOUT}s"
    assert not errors, f"delivery errors: {errors[:5]}"
    return reports


def consumer(bootstrap, group="compat", **extra):
    config = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    config.update(extra)
    return Consumer(config)


def consume(c, count, timeout=TIMEOUT):
    out = []
    deadline = time.time() + timeout
    while len(out) < count and time.time() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(msg.error())
        out.append(msg)
    assert len(out) == count, f"consumed {len(out)} of {count} records within {timeout}s"
    return out


def scenario_admin(bootstrap):
    a = admin(bootstrap)
    create(bootstrap, "admin-t", 3, {"retention.ms": "3600000", "cleanup.policy": "delete"})
    # Creating it again is refused with TOPIC_ALREADY_EXISTS.
    try:
        a.create_topics([NewTopic("admin-t", 1, 1)])["admin-t"].result(TIMEOUT)
        raise AssertionError("a second create succeeded")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS, e
    # An invalid name is refused.
    try:
        a.create_topics([NewTopic("bad name!", 1, 1)])["bad name!"].result(TIMEOUT)
        raise AssertionError("an invalid topic name was accepted")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.TOPIC_EXCEPTION, e
    md = a.list_topics(timeout=TIMEOUT)
    assert "admin-t" in md.topics, md.topics
    assert len(md.topics["admin-t"].partitions) == 3
    assert md.controller_id >= 0 and len(md.brokers) == 1, (md.controller_id, md.brokers)

    res = ConfigResource(ResourceType.TOPIC, "admin-t")
    configs = a.describe_configs([res])[res].result(TIMEOUT)
    assert configs["retention.ms"].value == "3600000", configs["retention.ms"]
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["segment.bytes"].is_default

    # Incremental: set one key, append to a list key.
    inc = ConfigResource(
        ResourceType.TOPIC,
        "admin-t",
        incremental_configs=[
            ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
        ],
    )
    a.incremental_alter_configs([inc])[inc].result(TIMEOUT)
    configs = a.describe_configs([res])[res].result(TIMEOUT)
    assert configs["retention.ms"].value == "7200000", configs["retention.ms"]
    assert configs["cleanup.policy"].value == "delete,compact", configs["cleanup.policy"]
    # A bad value is refused and changes nothing.
    bad = ConfigResource(
        ResourceType.TOPIC,
        "admin-t",
        incremental_configs=[
            ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    try:
        a.incremental_alter_configs([bad])[bad].result(TIMEOUT)
        raise AssertionError("retention.ms=soon was accepted")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.INVALID_CONFIG, e
    configs = a.describe_configs([res])[res].result(TIMEOUT)
    assert configs["retention.ms"].value == "7200000"

    # The legacy AlterConfigs replaces the whole set: keys not named go back to defaults.
    legacy = ConfigResource(ResourceType.TOPIC, "admin-t", set_config={"segment.ms": "600000"})
    a.alter_configs([legacy])[legacy].result(TIMEOUT)
    configs = a.describe_configs([res])[res].result(TIMEOUT)
    assert configs["segment.ms"].value == "600000", configs["segment.ms"]
    assert configs["retention.ms"].is_default, configs["retention.ms"]
    assert configs["cleanup.policy"].value == "delete", configs["cleanup.policy"]

    a.create_partitions([NewPartitions("admin-t", 5)])["admin-t"].result(TIMEOUT)
    deadline = time.time() + TIMEOUT
    while len(a.list_topics("admin-t", timeout=TIMEOUT).topics["admin-t"].partitions) != 5:
        assert time.time() < deadline, "partitions did not grow to 5"
        time.sleep(0.2)

    cluster = a.describe_cluster(request_timeout=TIMEOUT).result(TIMEOUT)
    assert cluster.cluster_id and len(cluster.nodes) == 1, cluster

    a.delete_topics(["admin-t"], operation_timeout=TIMEOUT)["admin-t"].result(TIMEOUT)
    deadline = time.time() + TIMEOUT
    while "admin-t" in a.list_topics(timeout=TIMEOUT).topics:
        assert time.time() < deadline, "the deleted topic is still listed"
        time.sleep(0.2)
    try:
        a.delete_topics(["admin-t"])["admin-t"].result(TIMEOUT)
        raise AssertionError("deleting a missing topic succeeded")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, e


def scenario_produce_consume(bootstrap):
    create(bootstrap, "pc", 1)
    records = [
        (
            f"key-{i}".encode(),
            f"value-{i}".encode(),
            [("h1", b"a"), ("h2", f"{i}".encode())],
            1_700_000_000_000 + i,
            None,
        )
        for i in range(200)
    ]
    records.append((None, b"no key", None, None, None))
    records.append((b"tombstone", None, None, None, None))
    reports = produce_all(producer(bootstrap), "pc", records)
    assert [o for _, o in reports] == list(range(len(records))), reports[:5]
    c = consumer(bootstrap, "pc-group")
    c.assign([TopicPartition("pc", 0, OFFSET_BEGINNING)])
    got = consume(c, len(records))
    for i, msg in enumerate(got[:200]):
        assert msg.key() == f"key-{i}".encode() and msg.value() == f"value-{i}".encode()
        assert msg.offset() == i
        assert msg.headers() == [("h1", b"a"), ("h2", f"{i}".encode())], msg.headers()
        assert msg.timestamp() == (1, 1_700_000_000_000 + i), msg.timestamp()
    assert got[200].key() is None and got[200].value() == b"no key"
    assert got[201].key() == b"tombstone" and got[201].value() is None
    c.close()


def scenario_compression(bootstrap):
    create(bootstrap, "codecs", 1)
    expected = []
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        p = producer(bootstrap, **{"compression.type": codec, "linger.ms": 20})
        records = [
            (f"{codec}-{i}".encode(), (f"{codec} payload {i} " * 20).encode(), None, None, None)
            for i in range(300)
        ]
        produce_all(p, "codecs", records)
        expected += [(k, v) for k, v, _, _, _ in records]
    c = consumer(bootstrap, "codecs-group")
    c.assign([TopicPartition("codecs", 0, OFFSET_BEGINNING)])
    got = consume(c, len(expected))
    assert [(m.key(), m.value()) for m in got] == expected
    c.close()


def scenario_partitioner(bootstrap):
    """Keys through librdkafka's murmur2 partitioner (Java's default); the
    Rust side checks Runnel's client puts each key on the same partition."""
    create(bootstrap, "keyed", 6)
    keys = [f"user-{i}".encode() for i in range(200)]
    reports = produce_all(
        producer(bootstrap, partitioner="murmur2_random"),
        "keyed",
        [(k, b"x", None, None, None) for k in keys],
    )
    print(json.dumps({k.decode(): p for k, (p, _) in zip(keys, reports)}))


def scenario_idempotent(bootstrap):
    create(bootstrap, "idem", 3)
    p = producer(
        bootstrap,
        **{"enable.idempotence": True, "max.in.flight.requests.per.connection": 5, "linger.ms": 1},
    )
    records = [(f"k{i}".encode(), f"{i}".encode(), None, None, None) for i in range(3000)]
    produce_all(p, "idem", records)
    c = consumer(bootstrap, "idem-group")
    c.assign([TopicPartition("idem", i, OFFSET_BEGINNING) for i in range(3)])
    got = consume(c, 3000)
    values = sorted(int(m.value()) for m in got)
    assert values == list(range(3000)), "duplicates or gaps"
    # Per partition, records keep the order they were produced in.
    by_partition = {}
    for m in got:
        by_partition.setdefault(m.partition(), []).append(int(m.value()))
    for part, vs in by_partition.items():
        assert vs == sorted(vs), f"partition {part} out of order"
    c.close()


def two_members_read_and_one_leaves(bootstrap, topic, group, conf, records):
    """Two members of `group` split `topic`'s four partitions, read
    `records` numbered records once between them (committing each), then one
    leaves and the other takes all four with the commits in place. Returns
    the remaining member."""
    create(bootstrap, topic, 4)
    a = consumer(bootstrap, group, **conf)
    b = consumer(bootstrap, group, **conf)
    a.subscribe([topic])
    b.subscribe([topic])
    deadline = time.time() + TIMEOUT
    while True:
        a.poll(0.2)
        b.poll(0.2)
        if len(a.assignment()) == 2 and len(b.assignment()) == 2:
            break
        assert time.time() < deadline, (a.assignment(), b.assignment())
    owned = {tp.partition for tp in a.assignment()} | {tp.partition for tp in b.assignment()}
    assert owned == {0, 1, 2, 3}, owned

    produce_all(
        producer(bootstrap),
        topic,
        [(None, f"{i}".encode(), None, None, i % 4) for i in range(records)],
    )
    seen = []
    deadline = time.time() + TIMEOUT
    while len(seen) < records:
        assert time.time() < deadline, f"read {len(seen)} of {records}"
        for c in (a, b):
            m = c.poll(0.2)
            if m is not None and not m.error():
                seen.append(int(m.value()))
                c.commit(message=m, asynchronous=False)
    assert sorted(seen) == list(range(records)), "the two members did not read everything once"

    # One member leaves: the other takes over all four partitions.
    b.close()
    deadline = time.time() + TIMEOUT
    while len(a.assignment()) != 4:
        a.poll(0.2)
        assert time.time() < deadline, a.assignment()
    committed = a.committed([TopicPartition(topic, i) for i in range(4)], timeout=TIMEOUT)
    assert [tp.offset for tp in committed] == [records // 4] * 4, committed
    return a


def scenario_groups(bootstrap):
    conf = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
    a = two_members_read_and_one_leaves(bootstrap, "grouped", "two-members", conf, 400)
    a.close()

    # More records; a new member resumes from the committed offsets.
    produce_all(
        producer(bootstrap),
        "grouped",
        [(None, f"{i}".encode(), None, None, i % 4) for i in range(400, 440)],
    )
    c = consumer(bootstrap, "two-members", **conf)
    c.subscribe(["grouped"])
    got = consume(c, 40)
    assert sorted(int(m.value()) for m in got) == list(range(400, 440))
    c.close()

    a = admin(bootstrap)
    listed = a.list_consumer_groups(request_timeout=TIMEOUT).result(TIMEOUT)
    assert "two-members" in {g.group_id for g in listed.valid}, listed.valid
    described = a.describe_consumer_groups(["two-members"])["two-members"].result(TIMEOUT)
    assert described.group_id == "two-members" and described.is_simple_consumer_group is False
    a.delete_consumer_groups(["two-members"], request_timeout=TIMEOUT)["two-members"].result(TIMEOUT)


def scenario_groups_kip848(bootstrap):
    """The same with KIP-848's protocol (group.protocol=consumer): the
    coordinator assigns, members heartbeat with ConsumerGroupHeartbeat."""
    conf = {"group.protocol": "consumer"}
    a = two_members_read_and_one_leaves(bootstrap, "grouped-848", "kip848", conf, 200)
    # ConsumerGroupDescribe: one member left, owning all four partitions.
    ad = admin(bootstrap)
    d = ad.describe_consumer_groups(["kip848"], request_timeout=TIMEOUT)["kip848"].result(TIMEOUT)
    assert str(getattr(d, "type", "CONSUMER")).endswith("CONSUMER"), d.type
    assert len(d.members) == 1, d.members
    owned = sorted(tp.partition for tp in d.members[0].assignment.topic_partitions)
    assert owned == [0, 1, 2, 3], d.members[0].assignment
    # ListGroups v5: group types, and the filter by type.
    listed = ad.list_consumer_groups(request_timeout=TIMEOUT).result(TIMEOUT)
    types = {g.group_id: g.type for g in listed.valid}
    assert types.get("kip848") == ConsumerGroupType.CONSUMER, types
    only = ad.list_consumer_groups(
        request_timeout=TIMEOUT, types={ConsumerGroupType.CLASSIC}
    ).result(TIMEOUT)
    assert "kip848" not in {g.group_id for g in only.valid}, only.valid
    only = ad.list_consumer_groups(
        request_timeout=TIMEOUT, types={ConsumerGroupType.CONSUMER}
    ).result(TIMEOUT)
    assert "kip848" in {g.group_id for g in only.valid}, only.valid
    a.close()


def scenario_kip848_commit_without_joining(bootstrap):
    """assign() + commit() with group.protocol=consumer: the consumer never
    joins, so it commits with member epoch -1 (OffsetCommit v9), which Kafka
    takes for a group without members."""
    create(bootstrap, "assigned-848", 1)
    produce_all(producer(bootstrap), "assigned-848", [(None, b"x", None, None, None)] * 3)
    c = consumer(bootstrap, "assigned-848-group", **{"group.protocol": "consumer"})
    c.assign([TopicPartition("assigned-848", 0, OFFSET_BEGINNING)])
    got = consume(c, 3)
    answered = c.commit(message=got[-1], asynchronous=False)
    assert all(tp.error is None for tp in answered), answered
    committed = c.committed([TopicPartition("assigned-848", 0)], timeout=TIMEOUT)
    assert committed[0].offset == 3, committed
    c.close()


def scenario_offsets(bootstrap):
    """Offsets for times, DeleteRecords, and auto.offset.reset on an out-of-range fetch."""
    create(bootstrap, "timed", 1)
    produce_all(
        producer(bootstrap),
        "timed",
        [(None, f"{i}".encode(), None, 1_000_000 + i * 1000, None) for i in range(10)],
    )
    c = consumer(bootstrap, "timed-group")
    found = c.offsets_for_times([TopicPartition("timed", 0, 1_003_500)], timeout=TIMEOUT)
    assert found[0].offset == 4, found
    beyond = c.offsets_for_times([TopicPartition("timed", 0, 9_000_000)], timeout=TIMEOUT)
    assert beyond[0].offset == -1, beyond
    low, high = c.get_watermark_offsets(TopicPartition("timed", 0), timeout=TIMEOUT)
    assert (low, high) == (0, 10), (low, high)

    a = admin(bootstrap)
    deleted = a.delete_records([TopicPartition("timed", 0, 5)], request_timeout=TIMEOUT)
    result = list(deleted.values())[0].result(TIMEOUT)
    assert result.low_watermark == 5, result
    low, high = c.get_watermark_offsets(TopicPartition("timed", 0), timeout=TIMEOUT)
    assert (low, high) == (5, 10), (low, high)

    # Offset 2 is gone: earliest resets to the new log start.
    c.assign([TopicPartition("timed", 0, 2)])
    got = consume(c, 5)
    assert [m.offset() for m in got] == [5, 6, 7, 8, 9]
    c.close()
    # Beyond the end with latest: reset to the end, then only new records.
    c = consumer(bootstrap, "timed-latest", **{"auto.offset.reset": "latest"})
    c.assign([TopicPartition("timed", 0, 1000)])
    for _ in range(6):
        c.poll(0.5)
    produce_all(producer(bootstrap), "timed", [(None, b"new", None, None, None)])
    got = consume(c, 1)
    assert got[0].offset() == 10 and got[0].value() == b"new"
    c.close()


def scenario_errors(bootstrap):
    """Unknown topic, MESSAGE_TOO_LARGE, and a 900 KB record that fits."""
    md = admin(bootstrap).list_topics("does-not-exist", timeout=TIMEOUT)
    assert md.topics["does-not-exist"].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, md.topics

    p = producer(bootstrap, **{"topic.metadata.propagation.max.ms": 1000, "message.timeout.ms": 5000})
    errors = []
    p.produce("does-not-exist", b"x", on_delivery=lambda err, msg: errors.append(err))
    p.flush(TIMEOUT)
    assert errors and errors[0] is not None, errors
    assert errors[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), errors

    create(bootstrap, "big", 1)
    p = producer(bootstrap, **{"message.max.bytes": 10_000_000, "compression.type": "none"})
    errors = []
    p.produce("big", b"y" * 2_000_000, on_delivery=lambda err, msg: errors.append(err))
    p.flush(TIMEOUT)
    assert errors and errors[0] is not None, "a 2 MB record was accepted"
    assert errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, errors[0]

    record = bytes(range(256)) * (900_000 // 256)
    produce_all(producer(bootstrap), "big", [(b"big", record, None, None, None)])
    c = consumer(bootstrap, "big-group")
    c.assign([TopicPartition("big", 0, OFFSET_BEGINNING)])
    got = consume(c, 1)
    assert got[0].value() == record and got[0].offset() == 0
    c.close()


def scenario_commit_unknown_topic(bootstrap):
    """Offsets for a topic that does not exist are refused per partition
    (UNKNOWN_TOPIC_OR_PARTITION), by OffsetCommit and by the admin client's
    AlterConsumerGroupOffsets, while the known partitions are committed."""
    create(bootstrap, "known", 1)
    c = consumer(bootstrap, "commit-unknown")
    offsets = [TopicPartition("known", 0, 7), TopicPartition("no-such-topic", 0, 3)]
    try:
        answered = c.commit(offsets=offsets, asynchronous=False)
        errors = {(tp.topic, tp.partition): tp.error for tp in answered}
        failed = errors[("no-such-topic", 0)]
        assert failed is not None, f"a commit to a missing topic succeeded: {errors}"
        failed = failed.code()
    except KafkaException as e:
        failed = e.args[0].code()
    assert failed == KafkaError.UNKNOWN_TOPIC_OR_PART, failed
    got = c.committed([TopicPartition("known", 0), TopicPartition("no-such-topic", 0)], timeout=TIMEOUT)
    assert [tp.offset for tp in got] == [7, -1001], got
    c.close()

    a = admin(bootstrap)
    futures = a.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions("commit-unknown-admin", [TopicPartition("no-such-topic", 0, 5)])],
        request_timeout=TIMEOUT,
    )
    try:
        result = futures["commit-unknown-admin"].result(TIMEOUT)
        errors = [tp.error for tp in result.topic_partitions]
        assert errors[0] is not None, f"AlterConsumerGroupOffsets to a missing topic succeeded: {result}"
        code = errors[0].code()
    except KafkaException as e:
        code = e.args[0].code()
    assert code == KafkaError.UNKNOWN_TOPIC_OR_PART, code


def read_values(bootstrap, topic, partitions, level, idle=3, ordered=False):
    """Every value of `topic` a consumer at `level` reads from the start,
    until nothing new has come for `idle` seconds (sorted, unless `ordered`)."""
    c = consumer(bootstrap, group=f"reader-{time.monotonic_ns()}", **{"isolation.level": level})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    values = []
    deadline = time.time() + TIMEOUT
    idle_until = time.time() + idle + 2
    while time.time() < min(idle_until, deadline):
        msg = c.poll(0.3)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(msg.error())
        values.append(msg.value().decode())
        idle_until = time.time() + idle
    c.close()
    return values if ordered else sorted(values)


def scenario_transactions(bootstrap):
    """A transactional producer commits across two topics and aborts;
    read_committed readers see exactly the committed records, read_uncommitted
    ones the aborted too; a read_committed reader waits at an open
    transaction until it commits; a second producer with the same
    transactional.id fences the first."""
    create(bootstrap, "tx-out", partitions=2)
    create(bootstrap, "tx-other")
    p = producer(bootstrap, **{"transactional.id": "tx-1", "transaction.timeout.ms": 60000})
    p.init_transactions(TIMEOUT)
    p.begin_transaction()
    for i in range(6):
        p.produce("tx-out", value=f"c{i}", partition=i % 2)
        p.produce("tx-other", value=f"o{i}")
    p.commit_transaction(TIMEOUT)
    p.begin_transaction()
    for i in range(4):
        p.produce("tx-out", value=f"a{i}", partition=i % 2)
    p.flush(TIMEOUT)
    p.abort_transaction(TIMEOUT)
    committed = [f"c{i}" for i in range(6)]
    assert read_values(bootstrap, "tx-out", 2, "read_committed") == committed
    assert read_values(bootstrap, "tx-other", 1, "read_committed") == [f"o{i}" for i in range(6)]
    seen = read_values(bootstrap, "tx-out", 2, "read_uncommitted")
    assert seen == sorted(committed + [f"a{i}" for i in range(4)]), seen

    # An open transaction holds read_committed readers back until it commits.
    p.begin_transaction()
    p.produce("tx-out", value="open", partition=0)
    p.flush(TIMEOUT)
    lso = TopicPartition("tx-out", 0)
    c = consumer(bootstrap, group="lso", **{"isolation.level": "read_committed"})
    _, high = c.get_watermark_offsets(lso, cached=False)
    c.close()
    assert read_values(bootstrap, "tx-out", 2, "read_committed", idle=2) == committed
    p.commit_transaction(TIMEOUT)
    c = consumer(bootstrap, group="lso2", **{"isolation.level": "read_committed"})
    _, after = c.get_watermark_offsets(lso, cached=False)
    c.close()
    assert after > high, (high, after)
    assert read_values(bootstrap, "tx-out", 2, "read_committed") == sorted(committed + ["open"])

    # A second producer with the same id fences the first.
    p2 = producer(bootstrap, **{"transactional.id": "tx-1"})
    p2.init_transactions(TIMEOUT)
    try:
        p.begin_transaction()
        p.produce("tx-out", value="zombie", partition=0)
        p.commit_transaction(TIMEOUT)
        raise AssertionError("the fenced producer committed")
    except KafkaException as e:
        error = e.args[0]
        assert error.fatal() or error.code() in (
            KafkaError._FENCED,
            KafkaError.PRODUCER_FENCED,
            KafkaError.INVALID_PRODUCER_EPOCH,
        ), error
    p2.begin_transaction()
    p2.produce("tx-out", value="p2", partition=1)
    p2.commit_transaction(TIMEOUT)
    final = read_values(bootstrap, "tx-out", 2, "read_committed")
    assert "zombie" not in final and "p2" in final, final
    print(json.dumps({"committed": final}))


def scenario_send_offsets(bootstrap):
    """Consume-transform-produce: a group member's offsets go into the
    producer's transaction (send_offsets_to_transaction). After a commit the
    group's committed offsets are the consumed positions and the output
    holds the transformed records; after an abort neither moves."""
    create(bootstrap, "eos-in", partitions=2)
    create(bootstrap, "eos-out", partitions=2)
    plain = producer(bootstrap)
    produce_all(plain, "eos-in", [(None, f"v{i}".encode(), None, None, i % 2) for i in range(20)])
    c = consumer(bootstrap, group="eos", **{"isolation.level": "read_committed"})
    c.subscribe(["eos-in"])
    p = producer(bootstrap, **{"transactional.id": "eos-1"})
    p.init_transactions(TIMEOUT)

    def transform(batch, commit):
        p.begin_transaction()
        for m in batch:
            p.produce("eos-out", value=m.value().upper(), partition=m.partition())
        positions = c.position(c.assignment())
        p.send_offsets_to_transaction(positions, c.consumer_group_metadata(), TIMEOUT)
        if commit:
            p.commit_transaction(TIMEOUT)
        else:
            p.abort_transaction(TIMEOUT)
        return {(tp.topic, tp.partition): tp.offset for tp in positions}

    first = consume(c, 10)
    moved = transform(first, commit=True)
    committed = {(tp.topic, tp.partition): tp.offset for tp in c.committed(c.assignment(), TIMEOUT)}
    assert committed == moved, (committed, moved)
    second = consume(c, 10)
    transform(second, commit=False)
    after = {(tp.topic, tp.partition): tp.offset for tp in c.committed(c.assignment(), TIMEOUT)}
    assert after == committed, (after, committed)
    c.close()
    out = read_values(bootstrap, "eos-out", 2, "read_committed")
    assert out == sorted(m.value().decode().upper() for m in first), out
    print(json.dumps({"committed": sorted(f"{t}-{p}:{o}" for (t, p), o in committed.items())}))


def scenario_read_committed(bootstrap):
    """Reads topic `txn` (written by the Rust side: committed, aborted and
    open transactions among plain records) at both isolation levels and
    prints, as one JSON line, the values each read and the end offset each
    was told (read_committed: the last stable offset)."""
    out = {}
    for level in ("read_committed", "read_uncommitted"):
        values = read_values(bootstrap, "txn", 1, level, ordered=True)
        c = consumer(bootstrap, group=f"rc-{level}", **{"isolation.level": level})
        _, high = c.get_watermark_offsets(TopicPartition("txn", 0), cached=False)
        c.close()
        out[level] = {"values": values, "end": high}
    print(json.dumps(out))


def main():
    scenario, bootstrap = sys.argv[1], sys.argv[2]
    globals()[f"scenario_{scenario}"](bootstrap)


if __name__ == "__main__":
    main()
