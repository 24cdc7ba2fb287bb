#!/usr/bin/env python3
"""Creates a demo task, starts it, follows its events until it finishes,
then shows how errors look. Run against a live central-manager:

    scripts/run &                              # the single-machine system
    scripts/tools install                      # grpcio-tools in target/tools-venv
    PY=target/tools-venv/bin/python
    $PY clients/python/generate.py
    $PY clients/python/example.py              # IPA_SERVER=HOST:PORT to point elsewhere
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ipa_client import Client, IpaError, pb  # noqa: E402

TERMINAL = {"task_completed", "task_cancelled", "task_failed"}


def main() -> int:
    server = os.environ.get("IPA_SERVER", "127.0.0.1:50051")
    with Client(server, actor="python-example") as ipa:
        task = ipa.create(
            "Python example",
            description="created by clients/python/example.py",
            metadata={"demo.step_ms": "200", "origin": "python"},
            auto_start=True,
        )
        print(f"created {task.task_id} ({pb.PodStatus.Name(task.pod_status)})")

        for event in ipa.watch_events(task_id=task.task_id):
            print(f"event {event.position} {event.type} by {event.actor_id}")
            if event.type in TERMINAL:
                break

        task = ipa.get(task.task_id)
        print(f"final status {pb.TaskStatus.Name(task.status)} phase {pb.Phase.Name(task.phase)}")
        mine = [t.task_id for t in ipa.list(status="completed") if t.created_by == "python-example"]
        print(f"completed tasks of python-example: {len(mine)}")

        try:
            ipa.get("00000000-0000-4000-8000-000000000000")
        except IpaError as err:
            print(f"error reason {err.reason} (domain {err.domain}): {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
