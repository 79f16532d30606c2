-- Group coordinators (CoordinatorRegistered / CoordinatorFenced records) and
-- which of them owns each partition of `__consumer_offsets`
-- (OffsetsPartitionsAssigned records).
CREATE TABLE coordinators (
    coordinator_id    INTEGER PRIMARY KEY,
    coordinator_epoch INTEGER NOT NULL,
    incarnation_id    TEXT    NOT NULL,
    -- The endpoints as a protobuf CoordinatorRegistered record.
    registration      BLOB    NOT NULL,
    fenced            INTEGER NOT NULL
);

CREATE TABLE offsets_owners (
    partition         INTEGER PRIMARY KEY,
    coordinator_id    INTEGER NOT NULL,
    coordinator_epoch INTEGER NOT NULL,
    owner_epoch       INTEGER NOT NULL,
    producer_id       INTEGER NOT NULL
);
