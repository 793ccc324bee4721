"""``dj_cqrs.protocols`` is a leaf; the typed registries keep the original's runtime API."""

import subprocess
import sys

from dj_cqrs.registries import RegistryMixin

_LOADED = (
    'import sys, dj_cqrs.protocols; '
    'print(*sorted(m for m in sys.modules if m.split(".")[0] in ("dj_cqrs", "django")))'
)


def test_importing_the_protocols_loads_nothing_else_of_the_library_or_django():
    """Any layer, a replica-only worker too, may import the protocols without loading a side."""
    result = subprocess.run(
        [sys.executable, '-c', _LOADED], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ['dj_cqrs', 'dj_cqrs.protocols']


def test_registry_mixin_subclassed_without_a_type_argument_still_registers():
    """``RegistryMixin`` became generic for type checkers; plain subclasses work as before."""

    class Registry(RegistryMixin):
        models = {}

    model = type('Thing', (), {'CQRS_ID': 'thing', '__module__': 'somewhere'})
    Registry.register_model(model)
    assert Registry.get_model_by_cqrs_id('thing') is model
    assert Registry.get_model_by_cqrs_id('other') is None
