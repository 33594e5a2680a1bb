"""The processor's Kafka outputs: scored articles to ``news.scored``, poison to ``news.dlq``.

Dead-letter format (the Kafka Connect convention): the record *value* is the original message
bytes, unchanged (so a fixed consumer can replay it as is), and the context travels in headers:

========================  ==================================================================
``dlq.reason``            why it was rejected (UTF-8 text, at most 4,000 characters)
``dlq.origin``            ``kafka://topic/partition/offset`` (or ``embedded``)
``dlq.topic``             source topic            } present when the origin is a Kafka record
``dlq.partition``         source partition        }
``dlq.offset``            source offset           }
``dlq.received_at``       when the processor read it (ISO-8601, UTC)
``dlq.dead_lettered_at``  when it was dead-lettered (ISO-8601, UTC)
``dlq.consumer_group``    the processors' consumer group
``dlq.payload_bytes``     size of the original message
``dlq.payload_sha256``    hash of the original message
``dlq.truncated``         ``true`` only if the original was cut to fit the topic's size limit
========================  ==================================================================
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from datetime import datetime, timezone

from newspulse.kafka.producer import JSON_HEADERS, RECORD_FAULTS, PublishError, RenewingProducer
from newspulse.schema import ScoredArticle
from newspulse.settings import Settings
from newspulse.store.base import DeadLetter, WriteResult

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 4000
#: Room left for key and headers when a dead letter's payload must be cut to fit the topic.
_HEADER_ROOM = 64 * 1024

_ORIGIN = re.compile(r"^kafka://(?P<topic>[^/]+)/(?P<partition>\d+)/(?P<offset>\d+)$")


def record_origin(topic: str, partition: int, offset: int) -> str:
    """Where a consumed record came from, as carried by RawMessage.origin and dead letters."""
    return f"kafka://{topic}/{partition}/{offset}"


def parse_origin(origin: str) -> tuple[str, int, int] | None:
    """``(topic, partition, offset)`` of a :func:`record_origin` string, else None."""
    m = _ORIGIN.match(origin)
    return (m["topic"], int(m["partition"]), int(m["offset"])) if m else None


class ScoredTopicSink:
    """ArticleSink that publishes scored articles to ``news.scored``, keyed by article id."""

    def __init__(self, settings: Settings, producer: RenewingProducer) -> None:
        self.topic = settings.kafka_topic_scored
        self._producer = producer

    def write(self, articles: Sequence[ScoredArticle]) -> WriteResult:
        """Publish; a record too large for the topic is refused (its own fault), a refused
        credential or ACL raises PublishRefused (permanent: the processor stops), any other
        delivery failure raises PublishError (the broker's: the pipeline pauses and retries)."""
        records = [(a.id.encode(), a.model_dump_json().encode(), JSON_HEADERS) for a in articles]
        result = WriteResult()
        outage: list[BaseException] = []
        for article, err in zip(articles, self._producer.send_all(self.topic, records)):
            if err is None:
                result.written.append(article.id)
            elif isinstance(err, RECORD_FAULTS):
                result.failed[article.id] = f"{self.topic}: {type(err).__name__}: {err}"
            else:
                outage.append(err)
        if outage:  # the delivered ones are said, so that the driver's retry re-sends only the rest
            raise PublishError(
                f"{len(outage)} of {len(articles)} scored article(s) not delivered to {self.topic}: {outage[0]}",
                done=result if result.written or result.failed else None,
            )
        return result


class DeadLetterTopicSink:
    """DeadLetterSink that publishes poison messages to ``news.dlq`` (format in the module doc).

    Raises PublishError when the broker does not acknowledge them, so the processor does not
    commit the offsets of messages that would otherwise vanish (PublishRefused when it refuses
    this client: the processor stops).
    """

    def __init__(self, settings: Settings, producer: RenewingProducer) -> None:
        self.topic = settings.kafka_topic_dlq
        self.group = settings.kafka_group_id
        self.max_payload = max(1024, settings.kafka_max_message_bytes - _HEADER_ROOM)
        self._producer = producer

    def _record(self, letter: DeadLetter, now: str) -> tuple[bytes, bytes, list]:
        payload = letter.payload
        headers = [
            ("dlq.reason", letter.reason[:MAX_REASON_CHARS].encode("utf-8", "replace")),
            ("dlq.origin", letter.origin.encode()),
            ("dlq.received_at", letter.received_at.astimezone(timezone.utc).isoformat().encode()),
            ("dlq.dead_lettered_at", now.encode()),
            ("dlq.consumer_group", self.group.encode()),
            ("dlq.payload_bytes", str(len(payload)).encode()),
            ("dlq.payload_sha256", hashlib.sha256(payload).hexdigest().encode()),
        ]
        where = parse_origin(letter.origin)
        if where is not None:
            headers += [("dlq.topic", where[0].encode()), ("dlq.partition", str(where[1]).encode()), ("dlq.offset", str(where[2]).encode())]
        if len(payload) > self.max_payload:
            payload = payload[: self.max_payload]
            headers.append(("dlq.truncated", b"true"))
        return letter.origin.encode(), payload, headers

    def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        now = datetime.now(timezone.utc).isoformat()
        errors = [e for e in self._producer.send_all(self.topic, [self._record(d, now) for d in letters]) if e is not None]
        if errors:
            raise PublishError(f"{len(errors)} of {len(letters)} dead letter(s) not delivered to {self.topic}: {errors[0]}")


def read_dead_letter(record) -> dict:
    """Decode a ``news.dlq`` ConsumerRecord into ``{"payload": bytes, "reason": str, ...}``:
    every ``dlq.*`` header without its prefix, partition and offset as ints."""
    out: dict = {"payload": record.value}
    for name, value in record.headers or []:
        if name.startswith("dlq."):
            out[name[4:]] = value.decode("utf-8", "replace")
    for name in ("partition", "offset", "payload_bytes"):
        if name in out:
            out[name] = int(out[name])
    return out
