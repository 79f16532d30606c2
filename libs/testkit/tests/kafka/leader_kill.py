"""The failure test's client side (libs/testkit/tests/kafka.rs,
acks_all_records_survive_a_leader_kill):

    python leader_kill.py produce BOOTSTRAP ACKED_FILE SECONDS
    python leader_kill.py verify BOOTSTRAP ACKED_FILE 0

`produce` writes numbered records to topic `durable` with acks=all for
SECONDS while the test kills the leader, and writes the number of every
record whose delivery was acknowledged to ACKED_FILE. `verify` reads the
whole partition with a consumer and fails unless every acknowledged
number is there.
"""

import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

TOPIC = "durable"


def produce(bootstrap, acked_path, seconds):
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            "message.timeout.ms": 60000,
        }
    )
    acked, failed = [], []

    def done(err, msg):
        if err is None:
            acked.append(int(msg.value()))
        else:
            failed.append((int(msg.value()), err.str()))

    n = 0
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            p.produce(TOPIC, str(n).encode(), on_delivery=done)
            n += 1
        except BufferError:
            pass
        p.poll(0.001)
    left = p.flush(90)
    with open(acked_path, "w") as f:
        f.write("\n".join(map(str, acked)))
    print(f"sent {n} acked {len(acked)} failed {len(failed)} undelivered {left}")
    if failed:
        print(f"first failures: {failed[:3]}")
    assert acked, "nothing was acknowledged"


def verify(bootstrap, acked_path):
    with open(acked_path) as f:
        acked = {int(line) for line in f if line.strip()}
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "verify",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    c.assign([TopicPartition(TOPIC, 0, 0)])
    seen = set()
    count = 0
    deadline = time.time() + 60
    while time.time() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                break
            print(f"consumer error: {msg.error()}")
            continue
        seen.add(int(msg.value()))
        count += 1
    c.close()
    missing = sorted(acked - seen)
    print(f"acked {len(acked)} read {count} distinct {len(seen)} missing {len(missing)}")
    assert not missing, f"acknowledged records lost: {missing[:20]}"
    assert count == len(seen), f"{count - len(seen)} duplicates despite idempotence"


def main():
    mode, bootstrap, path, seconds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if mode == "produce":
        produce(bootstrap, path, seconds)
    else:
        verify(bootstrap, path)


if __name__ == "__main__":
    main()
