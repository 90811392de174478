#!/usr/bin/env python3
"""Read events from a Kafka topic for tests, as an independent (non-Rust) client.

Consumes TOPIC from the earliest offset as consumer group GROUP until EXPECT messages
have been read or TIMEOUT seconds have passed, then prints exactly one JSON object on
stdout:

    {"count": <messages read>,
     "events": [{"key": <key as UTF-8 or null>,
                 "headers": {<name>: <value as UTF-8 or null>},
                 "value": <the message value parsed as JSON>}, ...]}

Events are in the order they were received (per partition in offset order). A value
that is not valid JSON is given as its UTF-8 text; a null value (tombstone) as null.
If a header name repeats, the last value wins. The offsets read are committed for the
group, so use a fresh group name to read a topic from the start again.

Exit status is 0 even when fewer than EXPECT messages arrived (the caller checks
"count"); it is non-zero only for bad arguments or a fatal client error. Diagnostics
(librdkafka logs, errors) go to stderr.

Run with the venv made by scripts/pyenv.sh:
    .state/venv/bin/python tools/pyclients/consume_events.py \
        --bootstrap 127.0.0.1:9092 --topic events --group t1 --expect 3 --timeout 20
"""

import argparse
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException


def text(raw):
    """Decode bytes as UTF-8 (invalid sequences replaced); None stays None."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    return raw.decode("utf-8", errors="replace")


def parse_value(raw):
    if raw is None:
        return None
    decoded = text(raw)
    try:
        return json.loads(decoded)
    except ValueError:
        return decoded


def to_event(msg):
    headers = {}
    for name, value in msg.headers() or []:
        headers[name] = text(value)
    return {"key": text(msg.key()), "headers": headers, "value": parse_value(msg.value())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True, help="bootstrap servers, host:port[,...]")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True, help="consumer group id")
    parser.add_argument("--expect", type=int, required=True, help="stop after this many messages")
    parser.add_argument("--timeout", type=float, required=True, help="give up after SECONDS")
    args = parser.parse_args()

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            # The topic may not exist yet (topics are created by the services): look
            # for it again every second instead of every five minutes.
            "topic.metadata.refresh.interval.ms": 1000,
            "session.timeout.ms": 10000,
        }
    )
    events = []
    deadline = time.monotonic() + args.timeout
    try:
        consumer.subscribe([args.topic])
        while len(events) < args.expect:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            msg = consumer.poll(min(remaining, 0.5))
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                # Transient, e.g. UNKNOWN_TOPIC_OR_PART until the topic is created.
                if err.code() != KafkaError._PARTITION_EOF:
                    print(f"consume_events: {err}", file=sys.stderr)
                continue
            events.append(to_event(msg))
    finally:
        try:
            if events:
                consumer.commit(asynchronous=False)
        except KafkaException as exc:
            print(f"consume_events: commit failed: {exc}", file=sys.stderr)
        consumer.close()

    json.dump({"count": len(events), "events": events}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
