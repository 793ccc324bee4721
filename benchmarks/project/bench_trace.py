"""Stage timestamps of one change on its way to the replica (``run.py --trace``).

With ``BENCH_TRACE=DIR`` the master and the worker note, per (pk, revision), the wall-clock
time of each stage they see and write them to ``DIR/<role>-<pid>.json`` at exit:

* master: ``save_start``/``save_end`` (the latency task), ``drain_start``/``drained`` (the
  publishing thread took the message / handed its frames to pika), ``confirmed``;
* worker: ``arrived`` (pika delivered it), ``decide`` (the batch it is in starts),
  ``apply_start``/``applied`` (the replica transaction: ``message_applied`` minus its
  ``duration``);
* ``seen``: the latency task read the row in the replica.

It wraps library internals by name, for measuring only; a stage whose hook is gone (a
renamed method) is left out rather than failing the run.
"""

import atexit
import json
import os
import time

events: list = []


def note(stage: str, pk, revision, at: float | None = None) -> None:
    events.append((stage, str(pk), revision, time.time() if at is None else at))


def _dump() -> None:
    name = f'{os.environ.get("BENCH_ROLE")}-{os.getpid()}.json'
    with open(os.path.join(os.environ['BENCH_TRACE'], name), 'w') as f:
        json.dump(events, f)


def _key(payload) -> tuple:
    return payload.pk, payload.instance_data.get('cqrs_revision')


def _wrap(owner, name: str, make) -> None:
    real = getattr(owner, name, None)
    if real is not None:
        setattr(owner, name, make(real))


def install(role: str) -> None:
    from dj_cqrs import signals

    atexit.register(_dump)
    if role == 'master':
        from dj_cqrs.transport import async_publisher

        def drain(real):
            def traced(self):
                items = [*self.retry, *self.owner._queue]
                began = time.time()
                sent = real(self)
                done = time.time()
                for item in items:
                    note('drain_start', *_key(item.payload), began)
                    note('drained', *_key(item.payload), done)
                return sent

            return traced

        _wrap(getattr(async_publisher, '_Loop', None), 'drain', drain)
        signals.message_published.connect(
            lambda sender, payload, **kw: note('confirmed', *_key(payload)), weak=False
        )
        return

    from dj_cqrs.transport import rabbit_consumer

    def body_key(body) -> tuple:
        data = json.loads(body)
        return data['instance_pk'], data['instance_data'].get('cqrs_revision')

    def on_message(real):
        def traced(self, channel, method, properties, body):
            note('arrived', *body_key(body))
            return real(self, channel, method, properties, body)

        return traced

    def decide(real):
        def traced(self, deliveries):
            at = time.time()
            for delivery in deliveries:
                note('decide', *body_key(delivery.body), at)
            return real(self, deliveries)

        return traced

    consumer = getattr(rabbit_consumer, 'RabbitConsumer', None)
    _wrap(consumer, '_on_message', on_message)
    _wrap(consumer, 'decide', decide)

    def applied(sender, payload, duration=0.0, **kw):
        now = time.time()
        note('apply_start', *_key(payload), now - duration)
        note('applied', *_key(payload), now)

    signals.message_applied.connect(applied, weak=False)
