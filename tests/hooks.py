"""Functions referenced from test settings."""


def meta_function(obj=None, **kwargs):
    return {'from': 'tests', 'signal_type': kwargs['signal_type']}


def correlation_function(signal_type, cqrs_id, instance_pk, queue):
    return f'corr:{signal_type}:{cqrs_id}:{instance_pk}:{queue}'


def no_kwargs(obj):
    return {}
