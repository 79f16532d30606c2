"""A consume-transform-produce application with exactly-once semantics
(confluent-kafka): reads `eos-in` in group `eos` at read_committed, writes
`out-<value>` to `eos-out` and commits its input offsets in the same
transaction. Run (and killed, and run again) by
libs/testkit/tests/exactly_once.rs:

    python eos_app.py BOOTSTRAP TOTAL

Recovers as Kafka's documentation says: an abortable error aborts the
transaction and rewinds to the committed offsets; a fatal one (fenced)
starts over with a new producer and consumer. Prints `done` and exits 0 once
the group's committed offsets cover all TOTAL input records.
"""

import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

TIMEOUT = 30


def make(bootstrap):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "eos",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    c.subscribe(["eos-in"])
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": "eos-app",
            "transaction.timeout.ms": 10000,
        }
    )
    p.init_transactions(60)
    return c, p


def rewind(c):
    """Back to the committed offsets (what the aborted transaction read is read again)."""
    assignment = c.assignment()
    if not assignment:
        return
    for tp in c.committed(assignment, TIMEOUT):
        offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
        c.seek(TopicPartition(tp.topic, tp.partition, offset))


def finished(c, total):
    assignment = c.assignment()
    if len(assignment) != 3:
        return False
    committed = c.committed(assignment, TIMEOUT)
    return sum(max(tp.offset, 0) for tp in committed) >= total


def main():
    bootstrap, total = sys.argv[1], int(sys.argv[2])
    c, p = make(bootstrap)
    deadline = time.time() + 300 + total // 10
    while time.time() < deadline:
        try:
            # Small transactions, paced, so the faults land mid-stream.
            msgs = [m for m in c.consume(5, 1.0) if not m.error()]
            if not msgs:
                if finished(c, total):
                    print("done", flush=True)
                    return
                continue
            p.begin_transaction()
            for m in msgs:
                p.produce("eos-out", key=m.key(), value=b"out-" + m.value())
            p.send_offsets_to_transaction(
                c.position(c.assignment()), c.consumer_group_metadata(), TIMEOUT
            )
            p.commit_transaction(TIMEOUT)
            time.sleep(0.05)
        except KafkaException as e:
            error = e.args[0]
            print(f"recovering from {error}", file=sys.stderr, flush=True)
            if error.fatal() or not (error.txn_requires_abort() or error.retriable()):
                try:
                    c.close()
                except Exception:
                    pass
                c, p = make(bootstrap)
                continue
            # Abortable or retriable: abort, and read again from the committed offsets.
            for step in (lambda: p.abort_transaction(TIMEOUT), lambda: rewind(c)):
                try:
                    step()
                except KafkaException:
                    pass
    print("timed out", flush=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
