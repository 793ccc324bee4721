"""Wire compatibility with django-cqrs 3.1, checked against the captured golden data."""

from unittest import mock

import pytest

from dj_cqrs.consumer import handler
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.registries import ReplicaRegistry
from dj_cqrs.wire import decode_body
from tests import golden

pytestmark = pytest.mark.django_db(transaction=True)


def _all_bodies():
    for path in golden.message_files():
        data = golden.load(f'messages/{path.name}')
        for index, message in enumerate(data['messages']):
            yield f'{path.stem}[{index}]', message


def test_every_golden_body_decodes_into_a_payload():
    """Every message body the original put on the wire decodes with our payload class."""
    count = 0
    for name, message in _all_bodies():
        payload = TransportPayload.decode(golden.body(message))
        expected = message['body_json']
        assert payload.cqrs_id == expected['cqrs_id'], name
        assert payload.signal_type == expected['signal_type'], name
        assert payload.retries == expected['retries'], name
        assert payload.to_dict()['expires'] == expected['expires'], name
        count += 1
    assert count >= 55


def _frozen_now():
    return mock.patch('dj_cqrs.dataclasses.timezone.now', return_value=golden.CAPTURE_TIME)


def _row(model, pk):
    obj = model.objects.filter(pk=pk).first()
    if obj is None:
        return None
    return {f.attname: getattr(obj, f.attname) for f in model._meta.concrete_fields}


def test_golden_stream_applies_like_the_original(settings, cqrs_log):
    """Replaying the replica's golden stream gives the original's outcome and rows per message."""
    settings.CQRS = {**settings.CQRS, 'queue': 'golden_replica'}
    direct = golden.load('replica/apply_direct.json')
    with _frozen_now():
        for result in direct['results']:
            message = golden.load(result['source_file'])['messages'][result['source_index']]
            outcome = handler.handle(golden.body(message), message['routing_key'])
            expected = handler.Action.RETRY if result['delayed_for_retry'] else handler.Action.ACK
            assert outcome.action is expected, result['source_file']
            after = result['replica_row_after']
            if after is None or result['delayed_for_retry']:
                continue
            model = ReplicaRegistry.models[result['cqrs_id']]
            row = _row(model, golden.python_value(after[model._meta.pk.name]))
            for key, value in after.items():
                assert row[key] == golden.python_value(value), (result['source_file'], key)

    for cqrs_id, rows in direct['final_tables'].items():
        model = ReplicaRegistry.models[cqrs_id]
        pk_name = model._meta.pk.name
        ours = {r[pk_name]: r for r in (_row(model, o.pk) for o in model.objects.all())}
        assert set(ours) == {golden.python_value(r[pk_name]) for r in rows}, cqrs_id
        for expected in rows:
            row = ours[golden.python_value(expected[pk_name])]
            for key, value in expected.items():
                assert row[key] == golden.python_value(value), (cqrs_id, key)


def test_golden_synthetic_cases_end_as_the_original_or_safer(settings, cqrs_log):
    """Hand-made edge bodies: same outcome as the original, and no exception where it crashed."""
    settings.CQRS = {**settings.CQRS, 'queue': 'golden_replica'}
    expected_actions = {
        'body is not JSON': handler.Action.REJECT,
        'missing instance_data key': handler.Action.REJECT,
        'missing instance_pk key': handler.Action.REJECT,
        'expires in the past': handler.Action.DEAD_LETTER,
        # The original raised KeyError('master') out of the worker for these two.
        'no expires key (legacy message)': handler.Action.ACK,
        'minimal body: only the 4 required keys': handler.Action.ACK,
        'expires null': handler.Action.ACK,
        'unknown extra field in instance_data': handler.Action.ACK,
        # Retried by the original until dead-lettered; nothing can ever apply it.
        'unknown signal_type': handler.Action.DEAD_LETTER,
        'unknown cqrs_id': handler.Action.REJECT,
        'instance_data without cqrs_revision': handler.Action.RETRY,
        'instance_data without required field name': handler.Action.RETRY,
        'DELETE without id in instance_data': handler.Action.RETRY,
        'DELETE for pk that does not exist': handler.Action.ACK,
    }
    cases = {c['case']: c for c in golden.load('replica/apply_synthetic.json')['results']}
    assert set(expected_actions) <= set(cases)
    with _frozen_now():
        for name, action in expected_actions.items():
            outcome = handler.handle(cases[name]['input_body_text'].encode(), 'golden_parent')
            assert outcome.action is action, name
    assert "ERROR CQRS couldn't be parsed: b'not json {'." in ' '.join(cqrs_log())
    assert any(
        line.startswith("ERROR CQRS couldn't proceed, instance_data isn't found in body: b'")
        for line in cqrs_log()
    )


def _shape(value):
    """The JSON type and textual form class of a value (for format comparison)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value).__name__


def test_our_bodies_have_the_golden_keys_and_value_formats(published):
    """Saving the golden data on our master writes bodies shaped like the original's."""
    import datetime
    import decimal
    import uuid

    from tests.dj_master.models import GoldenBasic, GoldenParent

    GoldenParent.objects.create(id=1, name='Parent ü/1')
    GoldenBasic.objects.create(
        char='Hello "world" / ünïcödé ✓',
        text='Line1\nLine2 / slash \\ backslash \t tab — em dash 😀 emoji </script>',
        flag=True,
        integer=-42,
        big=9007199254740993,
        amount=decimal.Decimal('12.30'),
        ratio=3.141592653589793,
        day=datetime.date(2024, 2, 29),
        moment=datetime.datetime(2024, 2, 29, 13, 45, 30, 123456, tzinfo=datetime.timezone.utc),
        uid=uuid.UUID('12345678-1234-5678-1234-567812345678'),
        payload={'z': 1, 'a': {'nested': [1, 2.5, None, True, 'ü/é']}, 'empty': {}, 'list': []},
        optional=None,
        parent_id=1,
    )
    ours_raw = [d.body for d in __import__('dj_cqrs').transport.InProcessTransport.published]
    golden_message = golden.messages('create_basic')[0]
    ours = decode_body(ours_raw[-1])
    theirs = decode_body(golden.body(golden_message))
    assert list(ours) == list(theirs)
    assert list(ours['instance_data']) == list(theirs['instance_data'])
    assert set(ours['previous_data']) == set(theirs['previous_data'])
    for key in ('cqrs_revision', 'char', 'text', 'big', 'day', 'moment', 'uid', 'payload'):
        assert ours['instance_data'][key] == theirs['instance_data'][key], key
    assert _shape(ours['instance_data']) == _shape(theirs['instance_data'])
    # The same escaping: '/' as '\/', non-ASCII as \\uXXXX, emoji as surrogate pairs.
    golden_text = golden.body(golden_message).decode()
    our_text = ours_raw[-1].decode()
    for fragment in ('Hello \\"world\\" \\/ \\u00fcn', '\\ud83d\\ude00 emoji <\\/script>'):
        assert fragment in golden_text and fragment in our_text
    # The intended difference: Decimals keep every digit.
    assert '"amount":12.30,' in our_text and '"amount":12.3,' in golden_text
    assert published()[-1][0] == golden_message['routing_key']


def test_our_delete_and_sync_bodies_match_the_golden_shape(published):
    """DELETE and queue-directed SYNC bodies carry the original's keys and routing keys."""
    from tests.dj_master.models import GoldenFields

    obj = GoldenFields.objects.create(id=2, title='Second', amount=1)
    obj.cqrs_sync(queue='golden_replica')
    obj.delete()
    (_, created), (sync_key, sync), (delete_key, delete) = published()
    golden_delete = golden.messages('delete_fields_custom')[0]['body_json']
    assert list(delete) == list(golden_delete)
    assert list(delete['instance_data']) == list(golden_delete['instance_data'])
    assert delete['instance_data']['custom'] == golden_delete['instance_data']['custom']
    assert delete_key == 'golden_fields'
    assert sync_key == 'cqrs.golden_replica.golden_fields'
    assert sync['previous_data'] is None and sync['signal_type'] == 'SYNC'
    golden_create = golden.messages('create_fields')[0]['body_json']
    assert list(created['instance_data']) == list(golden_create['instance_data'])
    assert created['previous_data'] == golden_create['previous_data']
