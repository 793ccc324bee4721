"""Kombu's ``filesystem://`` transport, with messages that appear in the folder whole.

Kombu writes a message file under its final name and then fills it: a fast consumer could take
it empty, and the message is lost. Here the payload is written to a hidden file and renamed
(atomic); names, folders and format stay Kombu's, so stock Kombu processes interoperate.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    # Kombu's own filesystem Channel names the argument ``payload`` where its base class says
    # ``message`` (both are passed positionally): no signature satisfies both.
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: object) -> None:  # type: ignore[override]
        name = f'{int(round(time.monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg'
        final = os.path.join(self.data_folder_out, name)
        # A leading dot: Kombu's reader matches the text after the first dot against
        # "<queue>.msg", which this name never is.
        partial = os.path.join(self.data_folder_out, f'.{name}.part')
        try:
            with open(partial, 'wb') as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise ChannelError(f'Cannot add file {final!r} to directory') from exc


class Transport(filesystem.Transport):
    Channel = Channel
