#!/usr/bin/env python3
"""Sends a command to a Minos service over Kafka with a stock client (confluent-kafka) and prints the reply.

    python3 scripts/kafka_stock_client.py --bootstrap 127.0.0.1:9092 --topic CreateFoo --content '{"bar": "x"}'

The envelope is the documented wire format (README, "Messaging"): the reply comes back on the given
reply topic with the request's identifier.
"""
import argparse
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--content", default="{}")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()

    reply_topic = f"StockClientReply.{uuid.uuid4().hex}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for future in admin.create_topics([NewTopic(reply_topic, num_partitions=1, replication_factor=1)]).values():
        future.result(timeout=10)

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": reply_topic,
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe([reply_topic])

    identifier = str(uuid.uuid4())
    envelope = {
        "version": 1,
        "topic": args.topic,
        "identifier": identifier,
        "reply_topic": reply_topic,
        "strategy": "unicast",
        "payload": {"content": json.loads(args.content), "status": 200, "headers": {}},
    }
    producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all"})
    producer.produce(args.topic, key=identifier, value=json.dumps(envelope).encode())
    producer.flush(10)

    deadline = time.time() + args.timeout
    while time.time() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        reply = json.loads(message.value())
        if reply.get("identifier") == identifier:
            print(json.dumps(reply))
            consumer.close()
            return 0
    print(f"no reply on {reply_topic} within {args.timeout} s", file=sys.stderr)
    consumer.close()
    return 1


if __name__ == "__main__":
    sys.exit(main())
