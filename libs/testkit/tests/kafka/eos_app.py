"""A consume-transform-produce application with exactly-once semantics
(confluent-kafka): reads `eos-in` in group `eos` at read_committed, writes
`out-<value>` to `eos-out` and commits its input offsets in the same
transaction. Run (and killed, and run again) by
libs/testkit/tests/exactly_once.rs:

    python eos_app.py BOOTSTRAP TOTAL

Recovers as Kafka's and librdkafka's documentation say: a retriable error
from a transactional call (a timeout) means the call is still in progress,
and only calling it again resumes it (librdkafka answers any other
transactional call with _CONFLICT meanwhile); an abortable error aborts the
transaction and rewinds to the committed offsets; a fatal one (fenced)
starts over with a new producer and consumer. Prints `done` and exits 0 once
the group's committed offsets cover all TOTAL input records.

librdkafka can block in a transactional call past its timeout when the
coordinator it had cached left the metadata meanwhile (a restarted broker
does, until it is unfenced): confluentinc/librdkafka#5456 and #5511. As a
supervisor's liveness probe would, a watchdog restarts the application (in
place, same deadline) when one call overstays its timeout by STUCK seconds,
after printing where it was stuck. Exactly-once must hold through that
restart as through a kill.
"""

import faulthandler
import os
import sys
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

TIMEOUT = 30
STUCK = 30


class Watchdog:
    """Restarts the process when one guarded call runs past its limit."""

    def __init__(self):
        self.since = None
        self.limit = 0
        threading.Thread(target=self.watch, daemon=True).start()

    def call(self, f, *args, limit=TIMEOUT):
        self.limit = limit + STUCK
        self.since = time.monotonic()
        try:
            return f(*args)
        finally:
            self.since = None

    def watch(self):
        while True:
            time.sleep(1)
            since = self.since
            if since is not None and time.monotonic() - since > self.limit:
                print("stuck in a client call; restarting", file=sys.stderr, flush=True)
                faulthandler.dump_traceback(all_threads=True)
                os.execv(sys.executable, [sys.executable] + sys.argv)


WATCHDOG = Watchdog()


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
    WATCHDOG.call(p.init_transactions, 60, limit=60)
    return c, p


def resume(call, *args):
    """Calls a transactional API until it returns or fails for good: after a
    retriable error the same call resumes the one in progress."""
    while True:
        try:
            return WATCHDOG.call(call, *args)
        except KafkaException as e:
            error = e.args[0]
            if not error.retriable() or error.txn_requires_abort() or error.fatal():
                raise
            if time.time() > float(os.environ["EOS_APP_DEADLINE"]):
                raise
            print(f"calling again after {error}", file=sys.stderr, flush=True)


def rewind(c):
    """Back to the committed offsets (what the aborted transaction read is read again)."""
    assignment = c.assignment()
    if not assignment:
        return
    for tp in WATCHDOG.call(c.committed, assignment, TIMEOUT):
        offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
        c.seek(TopicPartition(tp.topic, tp.partition, offset))


def finished(c, total):
    assignment = c.assignment()
    if len(assignment) != 3:
        return False
    committed = WATCHDOG.call(c.committed, assignment, TIMEOUT)
    return sum(max(tp.offset, 0) for tp in committed) >= total


def main():
    bootstrap, total = sys.argv[1], int(sys.argv[2])
    # exactly_once.rs's app_deadline, from the first start (a restart in place keeps it).
    deadline = time.time() + 180 + total // 10
    deadline = float(os.environ.setdefault("EOS_APP_DEADLINE", str(deadline)))
    # Whatever else never returns prints where it hangs and ends the run.
    faulthandler.dump_traceback_later(max(deadline - time.time(), 1) + 30, exit=True)
    c, p = make(bootstrap)
    reported = 0.0
    while time.time() < deadline:
        if time.time() - reported > 10:
            # Progress on stderr, so a run that times out says where it stood.
            reported = time.time()
            print(f"eos_app: assigned {len(c.assignment())} partitions", file=sys.stderr, flush=True)
        try:
            # Small transactions, paced, so the faults land mid-stream.
            msgs = [m for m in WATCHDOG.call(c.consume, 5, 1.0) if not m.error()]
            if not msgs:
                if finished(c, total):
                    print("done", flush=True)
                    return
                continue
            p.begin_transaction()
            for m in msgs:
                p.produce("eos-out", key=m.key(), value=b"out-" + m.value())
            resume(
                p.send_offsets_to_transaction,
                c.position(c.assignment()),
                c.consumer_group_metadata(),
                TIMEOUT,
            )
            resume(p.commit_transaction, TIMEOUT)
            time.sleep(0.05)
        except KafkaException as e:
            error = e.args[0]
            print(f"recovering from {error}", file=sys.stderr, flush=True)
            if error.retriable() and not (error.txn_requires_abort() or error.fatal()):
                # A consumer call (committed offsets): no transaction is
                # open here (transactional calls resume above), so try again.
                continue
            if error.fatal() or not error.txn_requires_abort():
                try:
                    WATCHDOG.call(c.close)
                except Exception:
                    pass
                c, p = make(bootstrap)
                continue
            # Abortable: abort, and read again from the committed offsets.
            for step in (lambda: resume(p.abort_transaction, TIMEOUT), lambda: rewind(c)):
                try:
                    step()
                except KafkaException:
                    pass
    print("timed out", flush=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
