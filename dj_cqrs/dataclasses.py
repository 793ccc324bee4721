"""The replication message (``TransportPayload``) and its wire form."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from operator import attrgetter
from typing import Any
from uuid import UUID

from dateutil.parser import parse as parse_datetime
from django.utils import timezone

from dj_cqrs.constants import LOGGER_NAME, SIGNAL_TYPES, SignalType
from dj_cqrs.correlation import get_correlation_id
from dj_cqrs.exceptions import PayloadError, UnusablePayloadError
from dj_cqrs.protocols import MessageMeta
from dj_cqrs.quoting import quote_for_log
from dj_cqrs.values import get_json_valid_value
from dj_cqrs.wire import decode_body, encode_body

logger = logging.getLogger(LOGGER_NAME)

REQUIRED_KEYS = ('signal_type', 'cqrs_id', 'instance_data', 'instance_pk')
"""Keys a consumer needs in every body (the original's check, in this order)."""


def _read_only(attribute: str) -> Any:
    """A read-only property returning ``attribute`` (the original's payload properties)."""
    return property(attrgetter(attribute))


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
        instance_pk: object,
        queue: str | None = None,
        previous_data: dict[str, Any] | None = None,
        correlation_id: object = None,
        expires: datetime.datetime | None = None,
        retries: int = 0,
        meta: MessageMeta = None,
    ) -> None:
        self._signal_type = signal_type
        self._cqrs_id = cqrs_id
        self._instance_data = instance_data
        self._instance_pk = instance_pk
        self._queue = queue
        self._previous_data = previous_data
        self._expires = expires
        self._meta = meta
        self.retries = retries
        if not correlation_id:
            correlation_id = get_correlation_id(signal_type, cqrs_id, instance_pk, queue)
        self._correlation_id = correlation_id
        self.is_dead_letter = False
        self.is_requeue = False
        self.routing_key: str | None = None

    signal_type: str = _read_only('_signal_type')
    cqrs_id: str = _read_only('_cqrs_id')
    instance_data: dict[str, Any] = _read_only('_instance_data')
    pk: object = _read_only('_instance_pk')
    queue: str | None = _read_only('_queue')
    previous_data: dict[str, Any] | None = _read_only('_previous_data')
    correlation_id: object = _read_only('_correlation_id')
    meta: MessageMeta = _read_only('_meta')
    expires: datetime.datetime | None = _read_only('_expires')

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
        expires_text = None if expires is None else expires.replace(microsecond=0).isoformat()
        return {
            'signal_type': self._signal_type,
            'cqrs_id': self._cqrs_id,
            'instance_data': self._instance_data,
            'previous_data': self._previous_data,
            'instance_pk': get_json_valid_value(self._instance_pk),
            'correlation_id': get_json_valid_value(self._correlation_id),
            'retries': self._retries,
            'expires': expires_text,
            'meta': self._meta,
        }

    def encode(self) -> bytes:
        """The message body bytes."""
        return encode_body(self.to_dict())

    @classmethod
    def from_message(cls, dct: dict[str, Any], *, check_pk: bool = False) -> TransportPayload:
        """Build a payload from a decoded body, checking the JSON type of every key.

        Raises :class:`PayloadError` for a body that is not a message (``check_pk``: also one
        without ``instance_pk``), and :class:`UnusablePayloadError`, holding the payload, for
        one that can never apply.
        """
        keys = REQUIRED_KEYS if check_pk else REQUIRED_KEYS[:3]
        missing = [key for key in keys if key not in dct]
        if missing:
            raise PayloadError(f"{missing[0]} isn't found in body")
        for key, expected, fits in _SHAPES:
            value = dct.get(key)
            if not fits(value):
                got = _quote(value) if key == 'retries' else _json_type(value)
                raise PayloadError(f'{key} must be {expected}, got {got}')
        payload = cls(
            signal_type=dct['signal_type'],
            cqrs_id=dct['cqrs_id'],
            instance_data=dct['instance_data'],
            instance_pk=dct.get('instance_pk'),
            previous_data=dct.get('previous_data'),
            correlation_id=dct.get('correlation_id'),
            expires=_read_expires(dct),
            retries=dct.get('retries') or 0,
            meta=dct.get('meta'),
        )
        problem = _unusable_values(payload.signal_type, dct, payload.instance_data)
        if problem is not None:
            raise UnusablePayloadError(problem, payload)
        return payload

    @classmethod
    def decode(
        cls,
        body: bytes | str,
        *,
        max_size: int | None = None,
        max_depth: int | None = None,
        check_keys: bool = True,
    ) -> TransportPayload:
        """Parse a message body; :class:`PayloadError` says what was wrong with it."""
        data = decode_body(body, max_size=max_size, max_depth=max_depth)
        return cls.from_message(data, check_pk=check_keys)

    def __repr__(self) -> str:
        return (
            f'<TransportPayload {self._signal_type} {self._cqrs_id} '
            f'pk={quote_for_log(self._instance_pk)!r} '
            f'retries={self._retries}>'
        )


_LOG_QUOTE_LIMIT = 100
_SHAPES: tuple[tuple[str, str, Callable[[Any], bool]], ...] = (
    # key, what its JSON value must be (in the error text), the test; checked in this order
    ('signal_type', 'a string', lambda v: type(v) is str),
    ('cqrs_id', 'a string', lambda v: type(v) is str),
    ('instance_data', 'a JSON object', lambda v: isinstance(v, dict)),
    ('previous_data', 'a JSON object or null', lambda v: v is None or isinstance(v, dict)),
    ('retries', 'a non-negative integer', lambda v: not v or (type(v) is int and v > 0)),
    ('correlation_id', 'a string or null', lambda v: v is None or type(v) in (str, int)),
)


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type (for error texts)."""
    if value is None:
        return 'null'
    if type(value) is bool:
        return f'boolean {_quote(value)}'
    if isinstance(value, (int, float)):
        return f'number {_quote(value)}'
    if type(value) is str:
        return f'string {_quote(value)}'
    return 'an array' if type(value) is list else 'an object'


def _quote(value: object) -> str:
    """``repr`` of a scalar from a body, cut to a length fit for a log line."""
    return repr(quote_for_log(value, _LOG_QUOTE_LIMIT))


def usable_pk(value: object) -> bool:
    """Whether a pk from a message can name a row: an integer or a non-empty string.

    (``null`` would let the database choose a key; ``1.5`` or ``true`` name another row.)
    """
    kind = type(value)
    if kind is int or kind is UUID:
        return True
    return kind is str and value != ''


MAX_REVISION = 2**31 - 1
"""The largest revision: ``cqrs_revision`` is an ``IntegerField`` on masters and replicas."""


def instance_data_problem(data: dict[str, Any]) -> str | None:
    """Why ``instance_data`` (of a message or a dump line) can never apply, or ``None``:
    a revision that is not an integer in the column's range, a ``cqrs_updated`` not text."""
    revision = data.get('cqrs_revision')
    if 'cqrs_revision' in data and not (type(revision) is int and 0 <= revision <= MAX_REVISION):
        return f'cqrs_revision must be an integer from 0 to 2**31-1, got {_json_type(revision)}'
    updated = data.get('cqrs_updated')
    if updated is not None and type(updated) is not str:
        return f'cqrs_updated must be a string, got {_json_type(updated)}'
    return None


def _unusable_values(signal_type: str, dct: dict[str, Any], data: dict[str, Any]) -> str | None:
    """Why a well-formed message can never apply, or ``None``."""
    if signal_type not in SIGNAL_TYPES:
        return None  # the consumer dead-letters unknown signal types itself, as the original
    pk = dct.get('instance_pk')
    if 'instance_pk' in dct and not usable_pk(pk):
        return f'instance_pk must be an integer or a string, got {_json_type(pk)}'
    problem = instance_data_problem(data)
    if problem is not None:
        return problem
    # (A DELETE without an id fails as in the original: "CQRS PK is not provided".)
    if signal_type == SignalType.DELETE and 'id' in data and not usable_pk(data['id']):
        return f'instance_data id must be an integer or a string, got {_json_type(data["id"])}'
    return None


def get_message_expiration_dt(message_ttl: int | None = None) -> datetime.datetime | None:
    """When a message published now expires (None: never)."""
    from dj_cqrs.conf import get_settings

    ttl = message_ttl or get_settings().master.message_ttl
    if ttl is None:
        return None
    return timezone.now() + datetime.timedelta(seconds=ttl)


def _read_expires(dct: dict[str, Any]) -> datetime.datetime | None:
    if 'expires' not in dct:
        # Messages from masters older than django-cqrs 2 carry no expiry.
        return get_message_expiration_dt()
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
            quote_for_log(value),
            quote_for_log(str(err)),
        )
        return get_message_expiration_dt()
