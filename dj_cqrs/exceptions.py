"""The library's exception tree: everything it raises on purpose derives from CQRSError."""

from django.core.exceptions import ImproperlyConfigured


class CQRSError(Exception):
    """Root of every error raised by dj_cqrs on purpose."""


class ConfigurationError(CQRSError, ImproperlyConfigured, AssertionError):
    """A setting or model declaration is wrong (an ``AssertionError`` too: the original asserts)."""


class PayloadError(CQRSError, ValueError):
    """A message body cannot be decoded into a payload; the text says what was wrong."""


class UnusablePayloadError(PayloadError):
    """A message that decodes but can never apply (e.g. a null pk): dead-lettered at once.

    ``payload`` is the message as decoded (``None`` when raised while applying).
    """

    def __init__(self, message: str, payload: object = None) -> None:
        super().__init__(message)
        self.payload = payload


class TransportError(CQRSError):
    """A transport could not talk to its broker."""


class UnroutableError(TransportError):
    """The broker has no queue bound to a message's routing key (it was not kept)."""


class PublishError(TransportError):
    """A message could not be published (after the transport's bounded retries)."""

    def __init__(self, message: str, payload: object = None) -> None:
        super().__init__(message)
        self.payload = payload
