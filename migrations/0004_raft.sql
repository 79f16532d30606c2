-- The controller quorum (Raft). The metadata tables are Raft's state
-- machine: this row says which Raft log entry they include, and the
-- membership (the set of controllers) as of that entry. It is written in the
-- same transaction as the records the entry applies, so a snapshot (a copy
-- of this database) carries its own position in the Raft log.
CREATE TABLE raft_applied (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    -- openraft's LogId as JSON.
    log_id     TEXT NOT NULL,
    -- openraft's StoredMembership as JSON.
    membership TEXT NOT NULL
);
