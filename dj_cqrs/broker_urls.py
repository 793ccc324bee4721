"""Broker URLs: one home for splitting a failover list and for masking passwords.

:func:`mask_url` is the one password masker: log lines, errors, ``cqrs_status``, the outbox's
``last_error`` and ``repr()`` of the parsed settings never show a password. The credentials
are split as ``urllib.parse`` splits them (``SplitResult.password``: the user part ends at the
*last* ``@`` of the authority, the password starts after the first ``:`` of it). The authority
itself is not taken from ``urlsplit``: it ends the netloc at the first ``/``, ``?`` or ``#``,
so a password holding one of them unescaped (``amqp://u:pa/ss@h``) would be cut short and its
end printed. Here a URL runs to the next white space, quote or URL, and its password to the
last ``@`` in it: a password never leaks; at worst a little more than the password is masked.
(A password holding white space or quotes must be percent-encoded, as RFC 3986 asks of every
special character.)

:func:`split_urls` splits ``;``-separated failover lists only where a new URL starts, and
percent-encodes what the password holds unescaped, so such a password reaches the broker
intact (pika and Kombu both unquote it) instead of being cut into pieces that error messages
would quote.
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

_SECRET_KEYS = ('password', 'passwd', 'secret', 'token')


def mask_url(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``****``.

    Works on one URL, several (``;``-separated or in a list's text) and free text holding
    URLs (an exception's message)::

        >>> mask_url('cannot reach amqp://app:p@ss/w;rd@rabbit:5672/prod')
        'cannot reach amqp://app:****@rabbit:5672/prod'
    """
    starts = [match.start() for match in _SCHEME.finditer(text)]
    if not starts:
        return text
    pieces = [text[: starts[0]]]
    for start, following in pairwise([*starts, len(text)]):
        pieces.append(_mask_one(text[start:following]))
    return ''.join(pieces)


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
        credentials = urlsplit('//' + _neutral(userinfo[scheme_end:]) + '@host')
        has_password, user = credentials.password is not None, credentials.username or ''
    except ValueError:  # characters urllib refuses (look-alikes of '@', ':'): mask all the same
        user, colon, _ = userinfo[scheme_end:].partition(':')
        has_password = bool(colon)
    if not has_password:
        return segment
    user_end = scheme_end + len(user)
    return f'{segment[:user_end]}:{MASK}{segment[len(userinfo) :]}'


def _neutral(userinfo: str) -> str:
    return userinfo.translate(_NEUTRAL)


_NEUTRAL = str.maketrans('/?#[]', '_____')


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
