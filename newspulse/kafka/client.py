"""Connection settings shared by every Kafka client, topic creation, and reaching a broker at start-up.

Every client is built with a bounded bootstrap (``NEWSPULSE_KAFKA_CONNECT_TIMEOUT_S``) and with
topic auto-creation off: topics come only from :func:`ensure_topics`, with the configured layout
(a broker restarted empty must not get ``news.raw`` back with its own default partition count
because a consumer asked for its metadata).

The clients make one attempt: :func:`ensure_topics` is one attempt bounded by a timeout and
raises :class:`BrokerUnreachable` (transient) when no broker answered. Whoever calls them owns
the clock (:mod:`newspulse.retrying`): a command that waits for a broker coming up passes its
call and its own deadline to :func:`until_reached` (:func:`~newspulse.retrying.retry_until` with
the broker's backoff); once running, outages are the batch driver's to wait out.

Secrets (the SASL password) go only into the client configuration dict; :func:`describe`
gives the loggable view of a connection, so no log line ever carries them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from kafka import ConsumerRebalanceListener, KafkaAdminClient
from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment, ConsumerProtocolSubscription

from newspulse.errors import Unavailable
from newspulse.retrying import Backoff, retry_until
from newspulse.settings import Settings, SettingsError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How every NewsPulse consumer group shares partitions: incremental cooperative rebalancing
#: (KIP-429). A member joining or leaving moves only the partitions that change owner; the
#: others keep being consumed through the rebalance (eager assignors revoke all of them).
#: Only one strategy is listed: kafka-python refuses to mix eager and cooperative ones, so a
#: group that ran an older release with range/round-robin must be stopped once (see
#: docs/streaming.md).
GROUP_ASSIGNORS = (CooperativeStickyAssignor,)


def connection_config(settings: Settings) -> dict:
    """kafka-python keyword arguments for bootstrap, TLS and SASL (shared by all clients).

    Raises SettingsError, naming the variable, when the security settings do not fit together.
    """
    cfg: dict = {
        "bootstrap_servers": [s.strip() for s in settings.kafka_bootstrap.split(",") if s.strip()],
        "security_protocol": settings.kafka_security_protocol,
        "client_id": "newspulse",
        "bootstrap_timeout_ms": int(settings.kafka_connect_timeout_s * 1000),
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL") and settings.kafka_ssl_cafile is not None:
        if not settings.kafka_ssl_cafile.is_file():
            raise SettingsError(f"NEWSPULSE_KAFKA_SSL_CAFILE: {settings.kafka_ssl_cafile} is not a file")
        cfg["ssl_cafile"] = str(settings.kafka_ssl_cafile)
    if settings.kafka_security_protocol.startswith("SASL_"):
        missing = [
            name
            for name, value in (
                ("NEWSPULSE_KAFKA_SASL_MECHANISM", settings.kafka_sasl_mechanism),
                ("NEWSPULSE_KAFKA_SASL_USERNAME", settings.kafka_sasl_username),
                ("NEWSPULSE_KAFKA_SASL_PASSWORD", settings.kafka_sasl_password),
            )
            if not value
        ]
        if missing:
            raise SettingsError(f"{', '.join(missing)}: required with NEWSPULSE_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}")
        cfg["sasl_mechanism"] = settings.kafka_sasl_mechanism
        cfg["sasl_plain_username"] = settings.kafka_sasl_username
        cfg["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()  # type: ignore[union-attr]
    return cfg


class SingleActiveAssignor(AbstractPartitionAssignor):
    """Every partition to one member of the group, the one that started first; the others get
    none and stand by until it leaves or dies (then the next oldest takes everything).

    For consumers that must see the whole topic in one process, such as the alerter (its
    market-wide scope and baselines need every article), yet may run twice for availability.
    Each member announces its start time in the subscription's user data. Whole assignments
    move at once, so the eager protocol costs nothing here.
    """

    name = "newspulse-single-active"
    version = 0

    def __init__(self) -> None:
        self.started_ns = time.time_ns()

    def metadata(self, topics) -> ConsumerProtocolSubscription:
        return ConsumerProtocolSubscription(self.version, sorted(topics), str(self.started_ns).encode())

    def assign(self, cluster, members) -> dict:
        def seniority(member) -> tuple[int, str]:
            try:
                started = int(bytes(member.metadata.user_data or b"").decode())
            except ValueError:  # not one of ours: last in line
                started = 2**63
            return (started, member.member_id)

        active = min(members, key=seniority)
        partitions = sorted(
            (topic, sorted(cluster.partitions_for_topic(topic) or ())) for topic in set(active.metadata.topics)
        )
        return {
            m.member_id: ConsumerProtocolAssignment(self.version, partitions if m is active else [], b"") for m in members
        }

    def on_assignment(self, assignment, generation) -> None:
        pass


class ActiveMember(ConsumerRebalanceListener):
    """Whether the group's latest assignment made this alerter the active member. (An eager
    rebalance revokes everything and assigns anew, so only the new assignment tells.)"""

    def __init__(self) -> None:
        self.owns = False
        self.assignments = 0  # how many (possibly empty) assignments the group has handed it

    def on_partitions_revoked(self, revoked) -> None:
        pass

    def on_partitions_assigned(self, assigned) -> None:
        self.owns = bool(assigned)
        self.assignments += 1


def group_config(settings: Settings, group_id: str, assignors: tuple = GROUP_ASSIGNORS) -> dict:
    """kafka-python keyword arguments for a member of consumer group ``group_id``: the
    connection plus the partition assignment (cooperative-sticky unless ``assignors`` says)."""
    return {**connection_config(settings), "group_id": group_id, "partition_assignment_strategy": assignors, "allow_auto_create_topics": False}


def without_topic_creation(client: T) -> T:
    """``client`` (a KafkaConsumer or KafkaProducer) with topic auto-creation off in its
    metadata requests.

    kafka-python 3.0 accepts ``allow_auto_create_topics=False`` but builds its metadata cache
    without it, so every metadata request still asks the broker to create the topics it names
    (tansu does: a restarted, empty broker got ``news.raw`` back with 4 partitions from the
    processor's subscription). The flag is set where those requests read it; the configs say it
    too, for a library that honours them."""
    cluster = getattr(client, "_cluster", None) or getattr(client, "_metadata")
    cluster.config["allow_auto_create_topics"] = False
    return client


def topic_id(consumer, topic: str) -> str | None:
    """The broker's id of ``topic`` as ``consumer`` last saw it (KIP-516), or None if unknown.

    It changes when the topic is deleted and created again (a broker that restarted empty):
    the consumer's positions and the group's offsets then point into a log that no longer
    exists. kafka-python keeps it in the consumer's metadata cache only."""
    return consumer._cluster.topic_id(topic)


def describe(settings: Settings) -> str:
    """A log-safe one-line description of the connection (never the password)."""
    text = f"{settings.kafka_bootstrap} ({settings.kafka_security_protocol}"
    if settings.kafka_security_protocol.startswith("SASL_"):
        text += f", SASL {settings.kafka_sasl_mechanism} as {settings.kafka_sasl_username}"
    return text + ")"


def is_transient(err: BaseException) -> bool:
    """True for broker errors worth retrying: connection loss, timeouts, leader or coordinator
    moves, and :class:`BrokerUnreachable`."""
    return (isinstance(err, KafkaError) and bool(getattr(err, "retriable", False))) or isinstance(err, (Unavailable, ConnectionError, TimeoutError))


#: How a command retries a broker that is coming up (topic creation, connecting a consumer):
#: 0.2 s doubling to 5 s, ±20 %, so that processors that failed together do not retry in step.
BROKER_BACKOFF = Backoff(first_s=0.2, max_s=5.0, jitter=0.2)


class BrokerUnreachable(Unavailable):
    """No broker answered (transient): one attempt failed, or a command gave up waiting and
    stops with this one line (``process`` with no broker, say) instead of a traceback."""


def until_reached(
    action: Callable[[], T],
    what: str,
    settings: Settings,
    *,
    timeout_s: float | None = None,
    stop: threading.Event | None = None,
) -> T:
    """The clock of a command that starts beside a broker, for its call site: ``action`` (one
    attempt) retried on transient broker errors with :data:`BROKER_BACKOFF` for at most
    ``timeout_s`` (default ``NEWSPULSE_KAFKA_CONNECT_TIMEOUT_S``); then
    :class:`BrokerUnreachable` naming the connection, the deadline and the last error. Other
    errors propagate as they are. Never used under the batch driver."""
    timeout = settings.kafka_connect_timeout_s if timeout_s is None else timeout_s
    try:
        return retry_until(action, what, timeout_s=timeout, transient=is_transient, backoff=BROKER_BACKOFF, stop=stop)
    except Exception as err:
        if not is_transient(err):
            raise
        cause = err.__cause__ if isinstance(err, BrokerUnreachable) and err.__cause__ is not None else err
        raise BrokerUnreachable(f"{what}: no Kafka broker at {describe(settings)} answered within {timeout:g} s ({type(cause).__name__}: {cause})") from cause


def topic_specs(settings: Settings) -> dict[str, dict]:
    """The three NewsPulse topics with their partitions, replication and message-size limit."""
    configs = {"max.message.bytes": str(settings.kafka_max_message_bytes)}
    return {
        name: {"num_partitions": settings.kafka_partitions, "replication_factor": settings.kafka_replication, "configs": configs}
        for name in (settings.kafka_topic_raw, settings.kafka_topic_scored, settings.kafka_topic_dlq)
    }


def ensure_topics(settings: Settings, *, timeout_s: float | None = None) -> list[str]:
    """Create the missing NewsPulse topics (idempotent) and wait until they have leaders: one
    attempt, whose connection and wait are each bounded by ``timeout_s`` (default
    ``NEWSPULSE_KAFKA_CONNECT_TIMEOUT_S``); no broker, or no leaders in time:
    :class:`BrokerUnreachable`, for the caller to retry or report.

    Returns the names that were created. Existing topics are left as they are, even when their
    partition count differs from the setting (changing it would remap keys to partitions).
    """
    specs = topic_specs(settings)
    timeout = settings.kafka_connect_timeout_s if timeout_s is None else timeout_s

    def create() -> list[str]:
        admin = KafkaAdminClient(**{**connection_config(settings), "bootstrap_timeout_ms": int(timeout * 1000)})
        try:
            existing = set(admin.list_topics())
            missing = {name: spec for name, spec in specs.items() if name not in existing}
            created: list[str] = []
            if missing:
                response = admin.create_topics(missing, raise_errors=False)
                for topic in response["topics"]:
                    code = topic["error_code"]
                    if code == 0:
                        created.append(topic["name"])
                    elif code != TopicAlreadyExistsError.errno:  # a concurrent processor won the race
                        raise RuntimeError(f"cannot create topic {topic['name']}: error {code} {topic.get('error_message') or ''}")
            admin.wait_for_topics(list(specs), timeout_ms=int(timeout * 1000))
            return created
        finally:
            admin.close()

    try:
        created = create()
    except Exception as err:
        if not is_transient(err):
            raise
        raise BrokerUnreachable(f"creating topics: no Kafka broker at {describe(settings)} answered ({type(err).__name__}: {err})") from err
    if created:
        log.info("created topics %s (%d partitions, replication %d)", created, settings.kafka_partitions, settings.kafka_replication)
    return created
