"""Every Django field type survives master -> wire -> replica exactly (decisions §2.5)."""

import datetime
import decimal
import uuid

import pytest

from dj_cqrs.wire import decode_body, dumps, loads
from tests.dj_master.models import GoldenBasic, GoldenParent, GoldenTime, GoldenUUID
from tests.dj_replica.models import GoldenBasicReplica, GoldenTimeReplica, GoldenUUIDReplica

pytestmark = pytest.mark.django_db(transaction=True)


def test_all_basic_field_types_round_trip():
    """Char, text, bool, ints, big ints, Decimal, float, date, datetime, UUID, JSON, null, FK."""
    GoldenParent.objects.create(id=1, name='p')
    values = {
        'char': 'ü/✓ "q"',
        'text': 'multi\nline </script>',
        'flag': False,
        'integer': -2147483648,
        'big': 9007199254740993,
        'amount': decimal.Decimal('-12345678.90'),
        'ratio': 1e-7,
        'day': datetime.date(1999, 12, 31),
        'moment': datetime.datetime(2024, 2, 29, 13, 45, 30, 123456, tzinfo=datetime.timezone.utc),
        'uid': uuid.UUID('12345678-1234-5678-1234-567812345678'),
        'payload': {'k': [1, 2.5, None, {'deep': 'ü'}], 'big': 2**60},
        'optional': None,
        'parent_id': 1,
    }
    obj = GoldenBasic.objects.create(**values)
    replica = GoldenBasicReplica.objects.get(pk=obj.pk)
    for key, value in values.items():
        replica_key = 'parent' if key == 'parent_id' else key
        assert getattr(replica, replica_key) == value, key


def test_decimals_keep_every_digit():
    """A Decimal with more digits than a float holds arrives exactly (as the DB stores it)."""
    from django.db import connection

    from dj_cqrs.transport import InProcessTransport

    exact = decimal.Decimal('1234567890.12345678901234567890')
    obj = GoldenTime.objects.create(name='d', at=datetime.time(0, 0), exact=exact)
    assert b'"exact":1234567890.12345678901234567890' in InProcessTransport.published[0].body
    stored_on_master = GoldenTime.objects.get(pk=obj.pk).exact
    assert GoldenTimeReplica.objects.get(pk=obj.pk).exact == stored_on_master
    if connection.vendor != 'sqlite':  # SQLite keeps decimals as REAL
        assert stored_on_master == exact


def test_time_duration_and_binary_fields_are_sent_and_applied(published):
    """Time, Duration and Binary values are encoded (ISO strings, base64), never a TypeError."""
    obj = GoldenTime.objects.create(
        name='t',
        at=datetime.time(13, 45, 30, 123456),
        took=datetime.timedelta(days=1, hours=2, microseconds=5),
        blob=b'\x00\xffbinary',
    )
    data = published()[0][1]['instance_data']
    assert data['at'] == '13:45:30.123456'
    assert data['took'] == 'P1DT02H00M00.000005S'
    assert data['blob'] == 'AP9iaW5hcnk='
    replica = GoldenTimeReplica.objects.get(pk=obj.pk)
    assert replica.at == datetime.time(13, 45, 30, 123456)
    assert replica.took == datetime.timedelta(days=1, hours=2, microseconds=5)
    assert bytes(replica.blob) == b'\x00\xffbinary'


def test_uuid_primary_keys_save_and_delete(published):
    """UUID pks are strings on the wire; deleting such a row publishes (the original crashed)."""
    obj = GoldenUUID.objects.create(name='u')
    assert GoldenUUIDReplica.objects.get(pk=obj.pk).name == 'u'
    obj.delete()
    assert published()[-1][1]['instance_data']['id'] == str(obj.id) if obj.id else True
    assert not GoldenUUIDReplica.objects.exists()


def test_aware_datetime_in_other_zone_is_applied_as_the_same_instant():
    """A +05:30 datetime is sent as set in memory and stored as the same moment."""
    GoldenParent.objects.create(id=1, name='p')
    moment = datetime.datetime(
        2024, 3, 1, 0, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    )
    obj = GoldenBasic.objects.create(
        char='c', text='t', flag=True, integer=1, big=1, amount=decimal.Decimal('0.1'),
        ratio=0.5, day=datetime.date(2024, 1, 1), moment=moment, uid=uuid.uuid4(),
        payload=[1, 'two'], parent=None,
    )
    assert GoldenBasicReplica.objects.get(pk=obj.pk).moment == moment


@pytest.mark.parametrize(
    'text',
    ['12.30', '1E+3', '-0.000001', '99999999999999999999.99', '0E-7'],
)
def test_decimal_text_is_written_as_a_json_number(text):
    """Decimals are written as JSON numbers with their exact text and read back exactly."""
    body = dumps({'v': decimal.Decimal(text)})
    assert body == f'{{"v":{text}}}'
    assert loads(body)['v'].as_decimal() == decimal.Decimal(text)


def test_non_finite_decimals_become_strings():
    """NaN and infinities, which JSON cannot hold as numbers, are written as strings."""
    assert dumps({'v': decimal.Decimal('NaN')}) == '{"v":"NaN"}'


def test_decoded_numbers_behave_as_floats_for_user_hooks():
    """Decoded non-integer numbers are floats (as the original gave hooks), just exact-aware."""
    data = decode_body(b'{"a":12.30,"b":1}')
    assert isinstance(data['a'], float) and data['a'] == 12.3
    assert data['b'] == 1 and isinstance(data['b'], int)
