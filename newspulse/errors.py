"""Failures that are nobody's message's fault, and how the pipeline tells them apart.

A message can fail for three kinds of reasons, and each has its own fate:

* **poison**: the message itself is bad (malformed JSON, an impossible date, a document the
  store's mapping refuses). It is dead-lettered with the reason and the stream goes on.
* **transient** (:class:`Unavailable`): a store or broker is down, slow or locked. Nothing is
  dead-lettered and nothing is committed; processing pauses and retries with backoff for as long
  as it takes, and resumes by itself.
* **permanent** (:class:`PermanentFailure`): retrying cannot help (a rejected or expired
  credential, a mapping that does not fit the records). The process stops with a clear error and
  a non-zero exit, again without dead-lettering or committing anything.

Every error meant for the user derives from :class:`NewsPulseError`: its message alone says what
went wrong and what to do, so the command line prints it as one line and exits with the
:class:`ExitCode` of its kind instead of showing a traceback; anything else is a bug and keeps its
traceback. Scripts tell the kinds apart by the exit code alone, as with git or kubectl.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum, IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from newspulse.store.base import WriteResult


class ExitCode(IntEnum):
    """The exit codes of every ``newspulse`` command (README's command table, docs/cli.md)."""

    ok = 0
    failure = 1  # the command ran and failed: a peer unreachable, a refused promotion, every feed failed
    usage = 2  # the command line or its input is wrong (click's own usage errors exit 2 too)
    config = 3  # a NEWSPULSE_* setting, the .env file or a configuration file (alert rules) is invalid
    not_found = 4  # a named thing does not exist: an alert, a silence, a model version, the store
    interrupted = 130  # Ctrl-C (128 + SIGINT, the shell's convention)


class NewsPulseError(Exception):
    """An expected failure with a message fit for the user; the CLI exits with :attr:`exit_code`."""

    exit_code: ExitCode = ExitCode.failure


class BadInput(NewsPulseError, ValueError):
    """What the user handed the command (a file, stdin, an option's value) cannot be used."""

    exit_code = ExitCode.usage


class ConfigError(NewsPulseError):
    """A setting or configuration file is invalid; the message names the variable or the file."""

    exit_code = ExitCode.config


class NotFound(NewsPulseError, LookupError):
    """A named thing (an alert, a model version) does not exist; the message names it."""

    exit_code = ExitCode.not_found


class InfrastructureError(NewsPulseError, RuntimeError):
    """A store or broker failed: never a reason to dead-letter a message."""


class Unavailable(InfrastructureError):
    """Transient: the peer is unreachable, overloaded or locked; retry later.

    ``done``: for a bulk write that the outage cut short (Elasticsearch answered 429 for some
    documents of a bulk request, the broker acknowledged some records of a batch), what the
    write did store or refuse before; None when it took nothing. A caller that knows re-sends
    only the rest; one that does not re-sends everything, which writes keyed by article id
    make harmless."""

    def __init__(self, message: str, done: WriteResult | None = None) -> None:
        super().__init__(message)
        self.done = done


class PermanentFailure(InfrastructureError):
    """Retrying will not help (bad credentials, bad mapping): stop with this message."""


class Failure(str, Enum):
    """What an exception raised while processing a batch means for its messages."""

    transient = "transient"  # pause and retry for as long as it takes
    permanent = "permanent"  # stop the process
    unknown = "unknown"  # a bug or a message the code cannot handle: retry a few times, then isolate


def classify(err: BaseException) -> Failure:
    """The kernel's classification: our own infrastructure errors and the OS's network errors."""
    if isinstance(err, PermanentFailure):
        return Failure.permanent
    if isinstance(err, (InfrastructureError, ConnectionError, TimeoutError)):
        return Failure.transient
    return Failure.unknown


#: How a source classifies failures: the Kafka processor adds the broker's own error types.
FailureClassifier = Callable[[BaseException], Failure]
