-- Partition reassignments (KIP-455): while one runs, `replicas` holds the
-- target replicas followed by the leaving ones, and these list the replicas
-- joining and leaving (comma-separated broker ids, empty when none runs).
ALTER TABLE partitions ADD COLUMN adding_replicas TEXT NOT NULL DEFAULT '';
ALTER TABLE partitions ADD COLUMN removing_replicas TEXT NOT NULL DEFAULT '';
