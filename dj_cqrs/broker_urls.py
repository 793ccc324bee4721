"""Broker URLs: one home for splitting a failover list and for masking passwords.

:func:`mask_url` masks what ``urllib.parse`` reads as the password (user up to the first
``:``, host after the *last* ``@``), but does not take the authority from ``urlsplit``: it ends
at the first ``/``, ``?`` or ``#``, so an unescaped one in a password would leak its end. Here a
URL runs to the next white space, quote or URL: at worst a little more than the password is
masked (white space or quotes in a password must be percent-encoded). :func:`split_urls`
percent-encodes the other special characters, so such passwords reach the broker intact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from itertools import pairwise
from urllib.parse import quote, urlsplit

MASK = '****'

# A URL starts with its scheme (RFC 3986: a letter, then letters, digits, + - .) and '://'.
_SCHEME = re.compile(r'[A-Za-z][A-Za-z0-9+.-]*://')
_END = re.compile(r'[\s\'"<>]')
_NEUTRAL = str.maketrans('/?#[]', '_____')

_SECRET_KEYS = ('password', 'passwd', 'secret', 'token')


def mask_url(text: str) -> str:
    """``text`` (one URL, several, or free text holding URLs) with every password masked::

    >>> mask_url('cannot reach amqp://app:p@ss/w;rd@rabbit:5672/prod')
    'cannot reach amqp://app:****@rabbit:5672/prod'
    """
    starts = [match.start() for match in _SCHEME.finditer(text)]
    if not starts:
        return text
    bounds = pairwise([*starts, len(text)])
    return text[: starts[0]] + ''.join(_mask_one(text[start:end]) for start, end in bounds)


def _mask_one(segment: str) -> str:
    """``segment`` starts with ``scheme://``: mask the password of the URL it starts with."""
    scheme_end = segment.index('://') + 3
    end = _END.search(segment, scheme_end)
    userinfo, at, _ = segment[: end.start() if end else len(segment)].rpartition('@')
    if not at:
        return segment
    # urllib.parse's own split of the credentials (user up to the first ':'), on a copy where
    # the characters that would end its netloc early are neutralised one for one.
    try:
        credentials = urlsplit('//' + userinfo[scheme_end:].translate(_NEUTRAL) + '@host')
        has_password, user = credentials.password is not None, credentials.username or ''
    except ValueError:  # characters urllib refuses (look-alikes of '@', ':'): mask all the same
        user, colon, _ = userinfo[scheme_end:].partition(':')
        has_password = bool(colon)
    if not has_password:
        return segment
    user_end = scheme_end + len(user)
    return f'{segment[:user_end]}:{MASK}{segment[len(userinfo) :]}'


_SEPARATOR = re.compile(r';(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)')
# Kept as they are in a password: RFC 3986 sub-delims, ':' and '%' (already encoded text).
_PASSWORD_SAFE = "!$&'()*+,=:%~"


def split_urls(url: str | Iterable[str]) -> list[str]:
    """One or several broker URLs (a list, or ``;``-separated), passwords percent-encoded."""
    items = _SEPARATOR.split(url) if isinstance(url, str) else list(url)
    return [quote_password(item.strip()) for item in items if item and item.strip()]


def quote_password(url: str) -> str:
    """``url`` with the characters its password holds unescaped (``@ / ; ? #``...) encoded."""
    scheme, sep, rest = url.partition('://')
    userinfo, at, host = rest.rpartition('@')
    if not (sep and at):
        return url
    user, colon, password = userinfo.partition(':')
    if not colon:
        return url
    return f'{scheme}://{user}:{quote(password, safe=_PASSWORD_SAFE)}@{host}'


def mask_value(value: object) -> object:
    """``value`` (a settings value) with URL passwords and secret-named keys masked."""
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, Mapping):
        return {
            key: (MASK if _is_secret(key) and val else mask_value(val))
            for key, val in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(mask_value(item) for item in value)
    return value


def _is_secret(key: object) -> bool:
    return isinstance(key, str) and any(word in key.lower() for word in _SECRET_KEYS)
