"""Client quotas with real Kafka clients against a Runnel broker's Kafka
listener. Run by libs/testkit/tests/kafka_security.rs on a SASL_PLAINTEXT
listener with user `alice` (password `alice-secret`, SCRAM-SHA-512):

    python quotas_compat.py quotas BOOTSTRAP

kafka-python's own encoding of AlterClientQuotas and DescribeClientQuotas
sets and reads the quotas (neither client has an admin call for them, so
the requests are built from kafka-python's protocol classes); confluent-kafka
is throttled by `producer_byte_rate` and `consumer_byte_rate` and still
delivers and reads every record; kafka-python's CreateTopics is refused with
THROTTLING_QUOTA_EXCEEDED once `controller_mutation_rate` is spent. Exits
non-zero with a message when something differs from Kafka.
"""

import sys
import time

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT = 30
TOPIC = "quotas"
RECORDS = 75
RECORD_BYTES = 1000
# Bytes a second: 75 KB at once is half again over 10 s of quota windows.
RATE = 5000.0
INVALID_REQUEST = 42
THROTTLING_QUOTA_EXCEEDED = 89


def confluent_auth():
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": "alice-secret",
    }


def python_admin(bootstrap):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="quota-admin",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="alice",
        sasl_plain_password="alice-secret",
    )


def call(admin, request):
    """Sends `request` to any broker and returns its answer."""

    async def send():
        return await admin._manager.send(request)

    return admin._manager.run(send)


def alter(admin, entries):
    """AlterClientQuotas: entries of ({type: name}, {key: value or None to
    remove}); returns each entry's (error_code, entity) as answered."""
    from kafka.protocol.admin.client_quotas import AlterClientQuotasRequest

    E = AlterClientQuotasRequest.EntryData
    request = AlterClientQuotasRequest(
        entries=[
            E(
                entity=[E.EntityData(entity_type=t, entity_name=n) for t, n in entity.items()],
                ops=[
                    E.OpData(key=k, value=0.0 if v is None else float(v), remove=v is None)
                    for k, v in ops.items()
                ],
            )
            for entity, ops in entries
        ],
        validate_only=False,
    )
    answer = call(admin, request)
    return [
        (e.error_code, {p.entity_type: p.entity_name for p in e.entity}) for e in answer.entries
    ]


def describe(admin, components, strict=False):
    """DescribeClientQuotas: components of (type, match_type, name); returns
    {((type, name), ...): {key: value}}."""
    from kafka.protocol.admin.client_quotas import DescribeClientQuotasRequest

    D = DescribeClientQuotasRequest
    answer = call(
        admin,
        D(
            components=[D.ComponentData(entity_type=t, match_type=m, match=n) for t, m, n in components],
            strict=strict,
        ),
    )
    assert answer.error_code == 0, answer
    return {
        tuple(sorted((p.entity_type, p.entity_name) for p in e.entity)): {v.key: v.value for v in e.values}
        for e in answer.entries
    }


def scenario_quotas(bootstrap):
    a = AdminClient({"bootstrap.servers": bootstrap, **confluent_auth()})
    a.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result(TIMEOUT)

    admin = python_admin(bootstrap)
    results = alter(
        admin,
        [
            ({"user": "alice", "client-id": "slow-producer"}, {"producer_byte_rate": RATE}),
            ({"user": "alice"}, {"consumer_byte_rate": RATE}),
            ({"client-id": None}, {"controller_mutation_rate": 1.0}),
            ({"user": "alice"}, {"no_such_quota": 1.0}),
        ],
    )
    codes = [code for code, _ in results]
    assert codes == [0, 0, 0, INVALID_REQUEST], results
    assert results[0][1] == {"user": "alice", "client-id": "slow-producer"}, results

    # Kafka's match types: 0 a name, 1 the default, 2 any name.
    alice = describe(admin, [("user", 0, "alice")])
    assert alice == {
        (("user", "alice"),): {"consumer_byte_rate": RATE},
        (("client-id", "slow-producer"), ("user", "alice")): {"producer_byte_rate": RATE},
    }, alice
    assert len(describe(admin, [("user", 0, "alice")], strict=True)) == 1
    defaults = describe(admin, [("client-id", 1, None)])
    assert defaults == {(("client-id", None),): {"controller_mutation_rate": 1.0}}, defaults

    # A producer over producer_byte_rate is told to wait, and loses nothing.
    throttles = []
    delivered = []
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            **confluent_auth(),
            "client.id": "slow-producer",
            "acks": "all",
            # Batches well under what the quota windows hold: a consumer's
            # fetch is capped at the quota over ten windows (50,000 bytes)
            # but always takes a whole batch, and one larger than that could
            # never be read under the quota (in Kafka either).
            "batch.size": 2000,
            "throttle_cb": lambda event: throttles.append(event.throttle_time),
        }
    )
    for i in range(RECORDS):
        value = f"{i:05d}".encode().ljust(RECORD_BYTES, b".")
        p.produce(TOPIC, value=value, on_delivery=lambda err, msg: delivered.append(err))
        p.poll(0)
    assert p.flush(TIMEOUT) == 0, "undelivered records"
    deadline = time.monotonic() + 5
    while not throttles and time.monotonic() < deadline:
        p.poll(0.1)
    assert len(delivered) == RECORDS and not any(delivered), delivered
    assert throttles and max(throttles) > 0, f"producer not throttled: {throttles}"

    # A consumer over consumer_byte_rate (alice's, whatever its client id)
    # is throttled and still reads every record, in order.
    consumer_throttles = []
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            **confluent_auth(),
            "client.id": "reader",
            "group.id": "quota-readers",
            "auto.offset.reset": "earliest",
            "throttle_cb": lambda event: consumer_throttles.append(event.throttle_time),
        }
    )
    c.subscribe([TOPIC])
    read = []
    deadline = time.monotonic() + 60
    while len(read) < RECORDS and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            read.append(int(m.value()[:5]))
    c.close()
    assert read == list(range(RECORDS)), f"read {len(read)}: {read[:10]}..."
    assert consumer_throttles and max(consumer_throttles) > 0, (
        f"consumer not throttled: {consumer_throttles}"
    )

    admin.close()

    # controller_mutation_rate 1: a burst of 11 partitions. CreateTopics
    # v6+ is strict (KIP-599): the request that overdraws is admitted, the
    # next is refused per topic with THROTTLING_QUOTA_EXCEEDED and a
    # throttle, and kafka-python then holds that connection back.
    from kafka.errors import NodeNotReadyError

    admin = python_admin(bootstrap)
    first = admin.create_topics(
        {"quota-wide": {"num_partitions": 20, "replication_factor": 1}}, raise_errors=False
    )
    assert [t["error_code"] for t in first["topics"]] == [0], first
    second = admin.create_topics(
        {"quota-more": {"num_partitions": 1, "replication_factor": 1}}, raise_errors=False
    )
    assert [t["error_code"] for t in second["topics"]] == [THROTTLING_QUOTA_EXCEEDED], second
    try:
        admin.create_topics({"quota-more": {"num_partitions": 1}}, raise_errors=False)
    except NodeNotReadyError as e:
        assert "throttle" in str(e), e
    else:
        raise AssertionError("kafka-python sent a request while throttled")
    admin.close()

    # Removing the quotas lifts them (a fresh connection: the last one was
    # told to wait).
    admin = python_admin(bootstrap)
    results = alter(
        admin,
        [
            ({"user": "alice", "client-id": "slow-producer"}, {"producer_byte_rate": None}),
            ({"user": "alice"}, {"consumer_byte_rate": None}),
            ({"client-id": None}, {"controller_mutation_rate": None}),
        ],
    )
    assert [code for code, _ in results] == [0, 0, 0], results
    assert describe(admin, []) == {}, "every quota removed"
    third = admin.create_topics(
        {"quota-more": {"num_partitions": 1, "replication_factor": 1}}, raise_errors=False
    )
    assert [t["error_code"] for t in third["topics"]] == [0], third
    admin.close()


def main():
    scenario, bootstrap = sys.argv[1], sys.argv[2]
    globals()[f"scenario_{scenario}"](bootstrap)
    print(f"{scenario}: ok")


if __name__ == "__main__":
    main()
