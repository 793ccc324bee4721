"""``CQRS_QUERY_TIMEOUT`` on the databases that have statement timeouts (PostgreSQL, MariaDB,
MySQL): messages still apply, and a statement that runs too long is stopped and logged."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from dj_cqrs.replica import timeouts
from tests.dj_master.models import GoldenParent
from tests.dj_replica.models import GoldenParentReplica

pytestmark = pytest.mark.django_db(transaction=True)


def with_timeout(settings, milliseconds: int) -> None:
    if connection.vendor not in ('postgresql', 'mysql'):
        pytest.skip(f'{connection.vendor} has no statement timeout')
    cqrs = dict(settings.CQRS)
    cqrs['replica'] = {
        **cqrs.get('replica', {}),
        'CQRS_QUERY_TIMEOUT': milliseconds,
        'CQRS_LOG_TIMED_OUT_QUERIES': True,
    }
    settings.CQRS = cqrs


def test_messages_apply_with_a_query_timeout(settings):
    """With a statement timeout configured, the replica still applies what the master sends."""
    with_timeout(settings, 5000)
    parent = GoldenParent.objects.create(id=1, name='a')
    parent.name = 'b'
    parent.save()
    assert list(GoldenParentReplica.objects.values_list('id', 'name', 'cqrs_revision')) == [
        (1, 'b', 1)
    ]


def test_a_statement_over_the_timeout_is_stopped_and_logged(settings, cqrs_log):
    """A statement longer than CQRS_QUERY_TIMEOUT fails as a timeout, and its SQL is logged."""
    with_timeout(settings, 200)
    timeouts.apply_query_timeouts(GoldenParentReplica)
    if connection.vendor == 'postgresql':
        slow = 'SELECT pg_sleep(3)'
    else:  # MariaDB/MySQL: SLEEP() is interrupted without an error; a long join is not
        slow = (
            'SELECT COUNT(*) FROM information_schema.columns a, '
            'information_schema.columns b, information_schema.columns c'
        )
    try:
        with pytest.raises(DatabaseError) as error, transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(slow)
    finally:
        connection.close()  # the session keeps its timeout: the next test gets a new one
    assert timeouts.is_timeout_error(error.value.__cause__ or error.value, connection.vendor)
    timeouts.log_timed_out_queries(error.value.__cause__ or error.value, GoldenParentReplica)
    assert f'ERROR Timed out query:\n{slow}' in cqrs_log()
