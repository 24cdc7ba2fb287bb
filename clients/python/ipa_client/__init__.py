"""A small typed client of the IPA task manager's gRPC API (ipa.v1).

    from ipa_client import Client, IpaError

    with Client("127.0.0.1:50051", actor="alice") as ipa:
        task = ipa.create("Implement login", metadata={"team": "web"}, auto_start=True)
        for event in ipa.watch_events(task_id=task.task_id):
            print(event.position, event.type)

Errors are raised as `IpaError`, carrying the reason (e.g. TASK_NOT_FOUND)
from the status's google.rpc.ErrorInfo detail. The stubs are generated from
proto/ by `generate.py` into `ipa_client/_generated/`.
"""

from .client import Client, IpaError, pb

__all__ = ["Client", "IpaError", "pb"]
