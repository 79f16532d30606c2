-- Producer ids handed out to brokers in blocks (ProducerIdsAllocated
-- records): every id below `next_producer_id` belongs to some block.
CREATE TABLE producer_ids (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    next_producer_id INTEGER NOT NULL
);
INSERT INTO producer_ids (id, next_producer_id) VALUES (1, 0);
