"""Per-thread state (the active bulk-relate serialization context)."""

import threading

cqrs_state = threading.local()
cqrs_state.bulk_relate_cm = None
