#!/usr/bin/env python3
"""Decodes record batch files with kafka-python's own record reader.

Usage: decode_with_kafka_python.py FILE...
Prints one JSON object per file: its batches with codec, CRC check and the
records (bytes as base64, null as null), so a Rust test can compare what a
real Kafka client reads with what Runnel wrote.
"""

import base64
import json
import sys

from kafka.record import MemoryRecords


def b64(value):
    return None if value is None else base64.b64encode(value).decode()


def decode(path):
    with open(path, "rb") as f:
        records = MemoryRecords(f.read())
    batches = []
    while True:
        batch = records.next_batch()
        if batch is None:
            break
        batches.append({
            "base_offset": batch.base_offset,
            "codec": batch.compression_type,
            "crc_valid": batch.validate_crc(),
            "timestamp_type": batch.timestamp_type,
            "producer_id": batch.producer_id,
            "records": [
                {
                    "offset": r.offset,
                    "timestamp": r.timestamp,
                    "key": b64(r.key),
                    "value": b64(r.value),
                    "headers": [[k, b64(v)] for k, v in r.headers],
                }
                for r in batch
            ],
        })
    return {"file": path, "batches": batches}


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(json.dumps(decode(path)))
