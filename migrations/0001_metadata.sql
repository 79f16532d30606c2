-- The controller's metadata store.
--
-- `metadata_log` is the ordered log of metadata records (protobuf
-- `runnel.metadata.v1.MetadataRecord`); the other tables are the state those
-- records produce, updated in the same transaction that appends them, with
-- `applied.next_offset` saying how far the state has got. Nothing else
-- writes these tables.

CREATE TABLE cluster (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    cluster_id TEXT    NOT NULL
);

CREATE TABLE metadata_log (
    "offset"     INTEGER PRIMARY KEY,
    timestamp_ms INTEGER NOT NULL,
    record       BLOB    NOT NULL
);

CREATE TABLE applied (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    next_offset INTEGER NOT NULL
);
INSERT INTO applied (id, next_offset) VALUES (1, 0);

CREATE TABLE brokers (
    broker_id      INTEGER PRIMARY KEY,
    broker_epoch   INTEGER NOT NULL,
    incarnation_id TEXT    NOT NULL,
    rack           TEXT    NOT NULL,
    fenced         INTEGER NOT NULL
);

CREATE TABLE broker_endpoints (
    broker_id INTEGER NOT NULL REFERENCES brokers (broker_id) ON DELETE CASCADE,
    position  INTEGER NOT NULL,
    name      TEXT    NOT NULL,
    host      TEXT    NOT NULL,
    port      INTEGER NOT NULL,
    PRIMARY KEY (broker_id, position)
);

CREATE TABLE topics (
    name     TEXT PRIMARY KEY,
    topic_id BLOB NOT NULL UNIQUE
);

CREATE TABLE partitions (
    topic           TEXT    NOT NULL REFERENCES topics (name) ON DELETE CASCADE,
    partition       INTEGER NOT NULL,
    replicas        TEXT    NOT NULL, -- broker ids, comma-separated, preferred leader first
    isr             TEXT    NOT NULL,
    leader          INTEGER NOT NULL,
    leader_epoch    INTEGER NOT NULL,
    partition_epoch INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);

-- resource_type: 2 topic, 4 broker (Kafka's ConfigResource types).
CREATE TABLE configs (
    resource_type INTEGER NOT NULL,
    resource_name TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    value         TEXT    NOT NULL,
    PRIMARY KEY (resource_type, resource_name, key)
);
