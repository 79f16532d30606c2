"""TLS and SASL with real Kafka clients against a Runnel broker's Kafka
listener. Run by libs/testkit/tests/kafka_security.rs, which creates user
`alice` (password `alice-secret`, SCRAM-SHA-256 and SCRAM-SHA-512) and, for
the TLS scenarios, the test certificates in TLS_DIR (ca.pem, alice.pem/.key,
other-ca.pem, mallory.pem/.key from another CA):

    python security_compat.py SCENARIO BOOTSTRAP [TLS_DIR]

Each scenario asserts what a Kafka user relies on and exits non-zero with a
message when something differs.
"""

import sys

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    NewTopic,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

TIMEOUT = 30
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def sasl(mechanism, user, password):
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }


def round_trip(bootstrap, auth, topic, group):
    """Creates `topic`, produces 20 records and reads them back in `group`."""
    a = AdminClient({"bootstrap.servers": bootstrap, **auth})
    a.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(TIMEOUT)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", **auth})
    for i in range(20):
        p.produce(topic, key=str(i), value=f"v{i}")
    assert p.flush(TIMEOUT) == 0, "every record delivered"
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            **auth,
        }
    )
    c.subscribe([topic])
    values = set()
    for _ in range(100):
        m = c.poll(1.0)
        if m is not None and not m.error():
            values.add(m.value().decode())
        if len(values) == 20:
            break
    c.commit(asynchronous=False)
    c.close()
    assert values == {f"v{i}" for i in range(20)}, f"read back {sorted(values)}"


def failures(bootstrap, conf):
    """The errors librdkafka reports when it cannot get metadata with
    `conf` (none when it can)."""
    errors = []
    p = Producer({"bootstrap.servers": bootstrap, "error_cb": errors.append, **conf})
    try:
        p.list_topics(timeout=5)
        return set()
    except KafkaException:
        p.poll(0.5)
        return {e.code() for e in errors} or {KafkaError._TIMED_OUT}


def refused(bootstrap, auth):
    """Whether the broker refuses these credentials, as librdkafka reports it."""
    return KafkaError._AUTHENTICATION in failures(bootstrap, auth)


def tls(tls_dir, client="alice", protocol="SSL"):
    conf = {"security.protocol": protocol, "ssl.ca.location": f"{tls_dir}/ca.pem"}
    if client:
        conf["ssl.certificate.location"] = f"{tls_dir}/{client}.pem"
        conf["ssl.key.location"] = f"{tls_dir}/{client}.key"
    return conf


def scenario_ssl(bootstrap, tls_dir):
    """A listener with ssl.client.auth=required."""
    round_trip(bootstrap, tls(tls_dir), "ssl-topic", "ssl-group")
    refusals = {
        "no client certificate": tls(tls_dir, client=None),
        "a client certificate from another CA": tls(tls_dir, client="mallory"),
        "a broker certificate the client does not trust": {
            **tls(tls_dir),
            "ssl.ca.location": f"{tls_dir}/other-ca.pem",
        },
        "plaintext on the TLS port": {"security.protocol": "PLAINTEXT"},
    }
    for what, conf in refusals.items():
        assert failures(bootstrap, conf), f"{what} was served"


def scenario_sasl_ssl(bootstrap, tls_dir):
    for mechanism in MECHANISMS:
        auth = {**sasl(mechanism, "alice", "alice-secret"), **tls(tls_dir, None, "SASL_SSL")}
        round_trip(bootstrap, auth, "sasl-ssl-" + mechanism.lower(), "sasl-ssl-" + mechanism.lower())
        assert refused(bootstrap, {**auth, "sasl.password": "wrong"}), f"{mechanism}: wrong password"
    assert failures(bootstrap, sasl("PLAIN", "alice", "alice-secret")), "SASL without TLS on a TLS port"


def scenario_kafka_python_tls(bootstrap, tls_dir):
    """kafka-python over SSL with a client certificate (the listener
    requests one) and over SASL_SSL, by the protocol the test names."""
    protocol = sys.argv[4]
    conf = {"security_protocol": protocol, "ssl_cafile": f"{tls_dir}/ca.pem"}
    if protocol == "SSL":
        conf.update(ssl_certfile=f"{tls_dir}/alice.pem", ssl_keyfile=f"{tls_dir}/alice.key")
    else:
        conf.update(
            sasl_mechanism="SCRAM-SHA-512",
            sasl_plain_username="alice",
            sasl_plain_password="alice-secret",
        )
    py_round_trip(bootstrap, conf, "py-tls")


def py_round_trip(bootstrap, conf, topic):
    """kafka-python produces 10 records to `topic` and reads them back."""
    from kafka import KafkaConsumer, KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", **conf)
    for i in range(10):
        p.send(topic, value=f"t{i}".encode()).get(TIMEOUT)
    p.close()
    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
        **conf,
    )
    values = {m.value.decode() for m in c}
    c.close()
    assert {f"t{i}" for i in range(10)} <= values, f"{topic}: read {sorted(values)}"


def scenario_confluent(bootstrap):
    for mechanism in MECHANISMS:
        auth = sasl(mechanism, "alice", "alice-secret")
        round_trip(bootstrap, auth, "sasl-" + mechanism.lower(), "group-" + mechanism.lower())
        assert refused(bootstrap, sasl(mechanism, "alice", "wrong")), f"{mechanism}: wrong password"
        assert refused(bootstrap, sasl(mechanism, "nobody", "alice-secret")), f"{mechanism}: unknown user"

    # Users through Kafka's admin API (KIP-554), as alice.
    a = AdminClient({"bootstrap.servers": bootstrap, **sasl("SCRAM-SHA-512", "alice", "alice-secret")})
    sha256 = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192)
    done = a.alter_user_scram_credentials([UserScramCredentialUpsertion("bob", sha256, b"bob-secret")])
    done["bob"].result(TIMEOUT)
    described = a.describe_user_scram_credentials().result(TIMEOUT)
    assert set(described) == {"alice", "bob"}, described
    infos = {(i.mechanism, i.iterations) for i in described["bob"].scram_credential_infos}
    assert infos == {(ScramMechanism.SCRAM_SHA_256, 8192)}, infos
    bob = sasl("SCRAM-SHA-256", "bob", "bob-secret")
    assert not refused(bootstrap, bob), "bob authenticates"
    assert refused(bootstrap, sasl("SCRAM-SHA-512", "bob", "bob-secret")), "bob has no SHA-512 credential"
    # Deleting what is not there is Kafka's RESOURCE_NOT_FOUND, for that user only.
    gone = a.alter_user_scram_credentials(
        [UserScramCredentialDeletion("carol", ScramMechanism.SCRAM_SHA_256)]
    )
    try:
        gone["carol"].result(TIMEOUT)
        raise AssertionError("deleting a missing credential succeeded")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.RESOURCE_NOT_FOUND, e
    a.alter_user_scram_credentials(
        [UserScramCredentialDeletion("bob", ScramMechanism.SCRAM_SHA_256)]
    )["bob"].result(TIMEOUT)
    assert refused(bootstrap, bob), "a deleted user is refused"
    try:
        a.describe_user_scram_credentials(["bob"])["bob"].result(TIMEOUT)
        raise AssertionError("a deleted user is still described")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.RESOURCE_NOT_FOUND, e


def scenario_kafka_python(bootstrap):
    from kafka import KafkaProducer
    from kafka.errors import KafkaError as PyKafkaError

    for mechanism in MECHANISMS:
        auth = {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": mechanism,
            "sasl_plain_username": "alice",
            "sasl_plain_password": "alice-secret",
        }
        py_round_trip(bootstrap, auth, "sasl-" + mechanism.lower())
        try:
            # kafka-python retries refused credentials until its bootstrap timeout.
            KafkaProducer(
                bootstrap_servers=bootstrap,
                bootstrap_timeout_ms=3000,
                **{**auth, "sasl_plain_password": "wrong"},
            ).close()
            raise AssertionError(f"{mechanism}: a wrong password was accepted")
        except PyKafkaError as e:
            assert "bootstrap" in str(e), e


def scenario_acls(bootstrap):
    """An authorizer with super user admin: alice and bob get only what the
    ACLs grant, created and removed through Kafka's admin API."""
    from confluent_kafka.admin import (
        AclBinding,
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    admin_auth = sasl("SCRAM-SHA-512", "admin", "admin-secret")
    alice = sasl("SCRAM-SHA-512", "alice", "alice-secret")
    bob = sasl("SCRAM-SHA-256", "bob", "bob-secret")
    a = AdminClient({"bootstrap.servers": bootstrap, **admin_auth})
    for t in ("orders", "payments", "logs-app"):
        a.create_topics([NewTopic(t, num_partitions=1, replication_factor=1)])[t].result(TIMEOUT)

    def allow(rtype, name, principal, op, pattern=ResourcePatternType.LITERAL):
        return AclBinding(rtype, name, pattern, principal, "*", op, AclPermissionType.ALLOW)

    bindings = [
        allow(ResourceType.TOPIC, "orders", "User:alice", AclOperation.WRITE),
        allow(ResourceType.TOPIC, "orders", "User:alice", AclOperation.READ),
        allow(ResourceType.GROUP, "alice-", "User:alice", AclOperation.READ, ResourcePatternType.PREFIXED),
        allow(ResourceType.TOPIC, "logs-", "User:bob", AclOperation.WRITE, ResourcePatternType.PREFIXED),
    ]
    for f in a.create_acls(bindings).values():
        f.result(TIMEOUT)
    described = a.describe_acls(
        AclBindingFilter(
            ResourceType.ANY, None, ResourcePatternType.ANY, "User:alice", None,
            AclOperation.ANY, AclPermissionType.ANY,
        )
    ).result(TIMEOUT)
    assert len(described) == 3, described

    # Not the admin: managing ACLs is refused.
    as_alice = AdminClient({"bootstrap.servers": bootstrap, **alice})
    try:
        refused = as_alice.create_acls(
            [allow(ResourceType.TOPIC, "payments", "User:alice", AclOperation.READ)]
        )
        list(refused.values())[0].result(TIMEOUT)
        raise AssertionError("alice created an ACL")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED, e

    # alice sees only her topic, and can write and read it in her group.
    topics = set(Producer({"bootstrap.servers": bootstrap, **alice}).list_topics(timeout=TIMEOUT).topics)
    assert topics == {"orders"}, topics
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", **alice})
    for i in range(10):
        p.produce("orders", value=f"o{i}")
    assert p.flush(TIMEOUT) == 0
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "alice-app", "auto.offset.reset": "earliest", **alice})
    c.subscribe(["orders"])
    values = set()
    for _ in range(60):
        m = c.poll(1.0)
        if m is not None and not m.error():
            values.add(m.value().decode())
        if len(values) == 10:
            break
    c.commit(asynchronous=False)
    c.close()
    assert values == {f"o{i}" for i in range(10)}, values

    # A topic without WRITE: TOPIC_AUTHORIZATION_FAILED, whether it exists or not.
    for topic in ("payments", "no-such-topic"):
        errors = []
        p = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 5000, **alice})
        p.produce(topic, value="x", on_delivery=lambda err, msg: errors.append(err))
        p.flush(TIMEOUT)
        assert errors and errors[0] is not None, f"{topic}: {errors}"
        assert errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, f"{topic}: {errors[0]}"

    # KIP-848's heartbeat: subscribing to a topic alice may not describe is refused.
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "alice-848", "group.protocol": "consumer", **alice})
    c.subscribe(["payments"])
    seen = None
    for _ in range(20):
        m = c.poll(1.0)
        if m is not None and m.error():
            seen = m.error()
            break
    c.close()
    # The heartbeat's own refusal (a fetch would not name the operation).
    assert seen is not None and seen.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, seen
    assert "DESCRIBE" in seen.str(), seen.str()

    # A transactional id alice may not use, then may.
    tp = Producer({"bootstrap.servers": bootstrap, "transactional.id": "alice-tx", **alice})
    try:
        tp.init_transactions(TIMEOUT)
        raise AssertionError("init_transactions without WRITE on the transactional id")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, e
    for f in a.create_acls(
        [allow(ResourceType.TRANSACTIONAL_ID, "alice-tx", "User:alice", AclOperation.WRITE)]
    ).values():
        f.result(TIMEOUT)
    tp = Producer({"bootstrap.servers": bootstrap, "transactional.id": "alice-tx", **alice})
    tp.init_transactions(TIMEOUT)
    tp.begin_transaction()
    tp.produce("orders", value="in-a-transaction")
    tp.commit_transaction(TIMEOUT)

    # A group alice may not use.
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bobs-group", "auto.offset.reset": "earliest", **alice})
    c.subscribe(["orders"])
    seen = None
    for _ in range(20):
        m = c.poll(1.0)
        if m is not None and m.error():
            seen = m.error().code()
            break
    c.close()
    assert seen == KafkaError.GROUP_AUTHORIZATION_FAILED, seen

    # bob writes under his prefix only, and reads nothing.
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", **bob})
    p.produce("logs-app", value="b")
    assert p.flush(TIMEOUT) == 0
    errors = []
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bob", "enable.auto.commit": False, **bob})
    c.assign([TopicPartition("logs-app", 0, 0)])
    for _ in range(20):
        m = c.poll(1.0)
        if m is not None and m.error():
            errors.append(m.error().code())
            if m.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                break
    c.close()
    # (The group's committed offsets may be refused first: bob has no group ACL.)
    assert KafkaError.TOPIC_AUTHORIZATION_FAILED in errors, errors
    assert set(errors) <= {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}, errors

    # Removing alice's bindings takes her topic away.
    deleted = a.delete_acls(
        [AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:alice", None, AclOperation.ANY, AclPermissionType.ANY)]
    )
    for f in deleted.values():
        assert len(f.result(TIMEOUT)) == 4
    topics = set(Producer({"bootstrap.servers": bootstrap, **alice}).list_topics(timeout=TIMEOUT).topics)
    assert topics == set(), topics


def main():
    scenario, bootstrap = sys.argv[1], sys.argv[2]
    globals()[f"scenario_{scenario}"](bootstrap, *sys.argv[3:4])


if __name__ == "__main__":
    main()
