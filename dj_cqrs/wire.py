"""The message body: compact JSON as django-cqrs 3.1 writes it (ujson), read back strictly."""

from __future__ import annotations

import json
import re
from typing import Any

import ujson

from dj_cqrs.exceptions import PayloadError
from dj_cqrs.values import JsonNumber, exact_numbers, wire_default


def dumps(data: object) -> str:
    """JSON text in the original's format: compact, ``/`` and non-ASCII escaped."""
    return ujson.dumps(exact_numbers(data), default=wire_default)


def encode_body(data: dict[str, Any]) -> bytes:
    """The bytes of a message body."""
    return dumps(data).encode('ascii')


_decoder = json.JSONDecoder(parse_float=JsonNumber)


def loads(text: str | bytes) -> Any:
    """Parse JSON, keeping the exact text of every non-integer number."""
    if type(text) is str:
        # What json.loads does for text, without building a decoder per call.
        if text.startswith('\ufeff'):
            raise json.JSONDecodeError('Unexpected UTF-8 BOM (decode using utf-8-sig)', text, 0)
        return _decoder.decode(text)
    return json.loads(text, parse_float=JsonNumber)


# A JSON string (matched whole, so that brackets inside it do not count) or a bracket.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def check_depth(text: str, max_depth: int) -> None:
    """Raise :class:`PayloadError` if ``text`` nests objects/arrays deeper than ``max_depth``.

    Runs before parsing, so a hostile body costs no memory.
    """
    if text.count('{') + text.count('[') <= max_depth:
        return
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token == '{' or token == '[':
            depth += 1
            if depth > max_depth:
                raise PayloadError(f'body is nested deeper than the limit of {max_depth} levels')
        elif token == '}' or token == ']':
            depth -= 1


def decode_body(
    body: bytes | str, *, max_size: int | None = None, max_depth: int | None = None
) -> dict[str, Any]:
    """Parse a message body into a dict, or raise :class:`PayloadError` saying what is wrong.

    ``max_size`` (bytes) and ``max_depth`` (nesting levels) are checked before parsing.
    """
    if max_size is not None and len(body) > max_size:
        raise PayloadError(f'body is {len(body)} bytes, over the limit of {max_size} bytes')
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            text = bytes(body).decode('utf-8')
        except UnicodeDecodeError as err:
            raise PayloadError(f'body is not UTF-8 ({err})') from err
    else:
        text = body
    if max_depth is not None:
        check_depth(text, max_depth)
    try:
        data = loads(text)
    except RecursionError as err:
        raise PayloadError('body is nested too deeply') from err
    except ValueError as err:
        raise PayloadError(f'body is not valid JSON ({err})') from err
    if not isinstance(data, dict):
        raise PayloadError(f'body is a JSON {type(data).__name__}, not an object')
    return data
