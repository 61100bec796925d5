"""What the relay puts on Kafka is what api-spec/asyncapi.yaml says, read back from the broker.

A partner deposit's event is consumed from ptce.submission.events with a client of our own (a
fresh consumer group, from the earliest offset), and its record layout checked: the key is the
dossier id, the value the CloudEvents structured envelope byte for byte as stored in the
outbox, and the only header `content-type: application/cloudevents+json`.
"""
import json
import os
import time
import uuid

import pytest
import requests
from confluent_kafka import Consumer, TopicPartition

from conftest import bearer, partner_body, sql, wait_until

TOPIC = "ptce.submission.events"


def test_record_layout_matches_asyncapi(urls, keys, db):
    partner = keys.create("partner", "84")
    r = requests.post(urls["submission"] + "/v1/dossiers", json=partner_body(), timeout=10,
                      headers={**bearer(partner), "Idempotency-Key": str(uuid.uuid4())})
    assert r.status_code == 201, r.text
    dossier_id = r.json()["id"]
    wait_until(lambda: sql(db, "SELECT 1 FROM submission.outbox WHERE key = %s AND sent_at IS NOT NULL",
                           dossier_id), timeout=30, what="the event acknowledged by the broker")
    stored = sql(db, "SELECT payload FROM submission.outbox WHERE key = %s", dossier_id)[0][0]

    consumer = Consumer({"bootstrap.servers": os.environ["PTCE_KAFKA_BROKERS"],
                         "group.id": f"test-records-{uuid.uuid4()}", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    try:
        meta = consumer.list_topics(TOPIC, timeout=10).topics[TOPIC]
        consumer.assign([TopicPartition(TOPIC, p, 0) for p in meta.partitions])
        found = None
        deadline = time.monotonic() + 30
        while found is None and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            if msg.key() == dossier_id.encode():
                found = msg
        assert found is not None, "the deposit's event was not found on the topic"
        event = json.loads(found.value())
        # content-type as the CloudEvents Kafka binding's structured mode; ce_type so that a
        # consumer skips a type it does not route without parsing the value.
        assert found.headers() == [("content-type", b"application/cloudevents+json"),
                                   ("ce_type", event["type"].encode())]
        assert found.value() == stored.encode()
        assert event["specversion"] == "1.0" and event["subject"] == dossier_id
        assert event["type"] == "dossier.deposited"
    finally:
        consumer.close()
