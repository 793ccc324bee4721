"""The replication message (``TransportPayload``) and its wire form."""

from __future__ import annotations

import datetime
import logging
from typing import Any

from dateutil.parser import parse as parse_datetime
from django.utils import timezone

from dj_cqrs.constants import LOGGER_NAME
from dj_cqrs.correlation import get_correlation_id
from dj_cqrs.exceptions import PayloadError
from dj_cqrs.values import get_json_valid_value
from dj_cqrs.wire import decode_body, encode_body

logger = logging.getLogger(LOGGER_NAME)

REQUIRED_KEYS = ('signal_type', 'cqrs_id', 'instance_data', 'instance_pk')
"""Keys a consumer needs in every body (the original's check, in this order)."""


class TransportPayload:
    """One message: what changed (``signal_type``, ``cqrs_id``, data) and how to deliver it."""

    __slots__ = (
        '_signal_type',
        '_cqrs_id',
        '_instance_data',
        '_instance_pk',
        '_queue',
        '_previous_data',
        '_correlation_id',
        '_expires',
        '_retries',
        '_meta',
        'is_dead_letter',
        'is_requeue',
        'routing_key',
        '__dict__',
    )

    def __init__(
        self,
        signal_type: str,
        cqrs_id: str,
        instance_data: dict[str, Any],
        instance_pk: Any,
        queue: str | None = None,
        previous_data: dict[str, Any] | None = None,
        correlation_id: Any = None,
        expires: datetime.datetime | None = None,
        retries: int = 0,
        meta: Any = None,
    ) -> None:
        self._signal_type = signal_type
        self._cqrs_id = cqrs_id
        self._instance_data = instance_data
        self._instance_pk = instance_pk
        self._queue = queue
        self._previous_data = previous_data
        self._expires = expires
        self._meta = meta
        self._retries = 0
        self.retries = retries
        if not correlation_id:
            correlation_id = get_correlation_id(signal_type, cqrs_id, instance_pk, queue)
        self._correlation_id = correlation_id
        self.is_dead_letter = False
        self.is_requeue = False
        self.routing_key: str | None = None

    @property
    def signal_type(self) -> str:
        return self._signal_type

    @property
    def cqrs_id(self) -> str:
        return self._cqrs_id

    @property
    def instance_data(self) -> dict[str, Any]:
        return self._instance_data

    @property
    def pk(self) -> Any:
        return self._instance_pk

    @property
    def queue(self) -> str | None:
        return self._queue

    @property
    def previous_data(self) -> dict[str, Any] | None:
        return self._previous_data

    @property
    def correlation_id(self) -> Any:
        return self._correlation_id

    @property
    def meta(self) -> Any:
        return self._meta

    @property
    def expires(self) -> datetime.datetime | None:
        return self._expires

    @property
    def retries(self) -> int:
        return self._retries

    @retries.setter
    def retries(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise PayloadError('Payload retries field should be 0 or positive integer.')
        self._retries = value

    def is_expired(self) -> bool:
        """Whether the message's ``expires`` time has passed."""
        return self._expires is not None and self._expires <= timezone.now()

    def to_dict(self) -> dict[str, Any]:
        """The body as a dict, with the original's keys in the original's order."""
        expires = self._expires
        if expires is not None:
            expires = expires.replace(microsecond=0).isoformat()
        return {
            'signal_type': self._signal_type,
            'cqrs_id': self._cqrs_id,
            'instance_data': self._instance_data,
            'previous_data': self._previous_data,
            'instance_pk': get_json_valid_value(self._instance_pk),
            'correlation_id': get_json_valid_value(self._correlation_id),
            'retries': self._retries,
            'expires': expires,
            'meta': self._meta,
        }

    def encode(self) -> bytes:
        """The message body bytes."""
        return encode_body(self.to_dict())

    @classmethod
    def from_message(cls, dct: dict[str, Any]) -> TransportPayload:
        """Build a payload from a decoded body; raise :class:`PayloadError` if it is unusable."""
        missing = [key for key in ('signal_type', 'cqrs_id', 'instance_data') if key not in dct]
        if missing:
            raise PayloadError(f"{missing[0]} isn't found in body")
        retries = dct.get('retries') or 0
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise PayloadError(f'retries must be a non-negative integer, got {retries!r}')
        if not isinstance(dct['instance_data'], dict):
            raise PayloadError('instance_data must be a JSON object')
        if not isinstance(dct['cqrs_id'], str):
            raise PayloadError('cqrs_id must be a string')
        return cls(
            signal_type=dct['signal_type'],
            cqrs_id=dct['cqrs_id'],
            instance_data=dct['instance_data'],
            instance_pk=dct.get('instance_pk'),
            previous_data=dct.get('previous_data'),
            correlation_id=dct.get('correlation_id'),
            expires=_read_expires(dct),
            retries=retries,
            meta=dct.get('meta'),
        )

    @classmethod
    def decode(
        cls, body: bytes | str, *, max_size: int | None = None, check_keys: bool = True
    ) -> TransportPayload:
        """Parse a message body; :class:`PayloadError` says what was wrong with it."""
        data = decode_body(body, max_size=max_size)
        if check_keys:
            for key in REQUIRED_KEYS:
                if key not in data:
                    raise PayloadError(f"{key} isn't found in body")
        return cls.from_message(data)

    def __repr__(self) -> str:
        return (
            f'<TransportPayload {self._signal_type} {self._cqrs_id} pk={self._instance_pk!r} '
            f'retries={self._retries}>'
        )


def _default_expiry() -> datetime.datetime | None:
    from dj_cqrs.utils import get_message_expiration_dt

    return get_message_expiration_dt()


def _read_expires(dct: dict[str, Any]) -> datetime.datetime | None:
    if 'expires' not in dct:
        # Messages from masters older than django-cqrs 2 carry no expiry.
        return _default_expiry()
    value = dct['expires']
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise TypeError(f'expected a string, got {type(value).__name__}')
        expires = parse_datetime(value)
        if timezone.is_naive(expires):
            expires = timezone.make_aware(expires, datetime.timezone.utc)
        return expires
    except (ValueError, TypeError, OverflowError) as err:
        logger.warning(
            'CQRS message has a malformed expires value %r (%s), using the default TTL.',
            value,
            err,
        )
        return _default_expiry()
