"""The Python client against a live central-manager with a pod-host
(IPA_SERVER=HOST:PORT). Run by the Rust suite (tests/tests/e2e/python_client.rs)
after generate.py:  python -m unittest discover -s clients/python/tests -v
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import grpc  # noqa: E402

from ipa_client import Client, IpaError, pb  # noqa: E402

SERVER = os.environ["IPA_SERVER"]
UNKNOWN = "00000000-0000-4000-8000-000000000000"


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.ipa = Client(SERVER, actor="py-test", timeout=20)

    def tearDown(self):
        self.ipa.close()

    def test_create_get_list(self):
        t = self.ipa.create("py create", metadata={"k": "v"}, request_id="py-1")
        self.assertEqual(t.title, "py create")
        self.assertEqual(t.status, pb.TASK_STATUS_INACTIVE)
        self.assertEqual(dict(t.metadata), {"k": "v"})
        again = self.ipa.create("other title", request_id="py-1")
        self.assertEqual(again.task_id, t.task_id, "request_id makes create idempotent")
        got = self.ipa.get(t.task_id)
        self.assertEqual(got.created_by, "py-test")
        ids = [x.task_id for x in self.ipa.list(status="inactive", created_by="py-test")]
        self.assertIn(t.task_id, ids)
        self.assertNotIn(t.task_id, [x.task_id for x in self.ipa.list(status="TASK_STATUS_COMPLETED")])

    def test_start_stop_and_watch(self):
        t = self.ipa.create("py run", metadata={"demo.step_ms": "60000"})
        pod = self.ipa.start(t.task_id)
        self.assertEqual(pod.generation, 1)
        with self.assertRaises(IpaError) as ctx:
            self.ipa.start(t.task_id)
        self.assertEqual(ctx.exception.reason, "ALREADY_STARTED")
        self.ipa.stop(t.task_id, reason="py stop")
        seen = []
        for e in self.ipa.watch_events(task_id=t.task_id):
            seen.append(e.type)
            if e.type == "pod_stopped":
                break
        self.assertEqual(seen[:2], ["task_created", "pod_started"])
        self.assertEqual(seen[-1], "pod_stopped")
        self.ipa.cancel(t.task_id, "done with it")
        self.assertEqual(self.ipa.get(t.task_id).status, pb.TASK_STATUS_CANCELLED)

    def test_auto_start_runs_to_completion(self):
        t = self.ipa.create("py auto", metadata={"demo.step_ms": "50"}, auto_start=True)
        deadline = time.monotonic() + 60
        for e in self.ipa.watch_events(task_id=t.task_id):
            if e.type == "task_completed" or time.monotonic() > deadline:
                break
        self.assertEqual(self.ipa.get(t.task_id).status, pb.TASK_STATUS_COMPLETED)
        with self.assertRaises(IpaError) as ctx:
            self.ipa.complete(t.task_id)
        self.assertEqual(ctx.exception.reason, "ALREADY_COMPLETED")

    def test_errors_carry_the_error_info_reason(self):
        with self.assertRaises(IpaError) as ctx:
            self.ipa.get(UNKNOWN)
        err = ctx.exception
        self.assertEqual(err.reason, "TASK_NOT_FOUND")
        self.assertEqual(err.domain, "ipa.v1", "the reason came from the ErrorInfo detail")
        self.assertEqual(err.code, grpc.StatusCode.NOT_FOUND)
        self.assertTrue(str(err).startswith("TASK_NOT_FOUND: "))
        with self.assertRaises(IpaError) as ctx:
            self.ipa.create("   ")
        self.assertEqual(ctx.exception.reason, "INVALID_TITLE")
        with self.assertRaises(IpaError) as ctx:
            self.ipa.cancel(UNKNOWN, "")
        self.assertEqual(ctx.exception.reason, "MISSING_REASON")

    def test_stats_and_schedules_through_the_stub(self):
        from ipa.v1 import admin_pb2, schedules_pb2  # generated alongside

        self.ipa.create("py stats")
        stats = self.ipa._stub.GetStats(admin_pb2.GetStatsRequest(), timeout=20)
        self.assertGreaterEqual(stats.groups[0].total, 1)
        created = self.ipa._stub.CreateSchedule(
            schedules_pb2.CreateScheduleRequest(
                name="py-hourly",
                interval_seconds=3600,
                task=schedules_pb2.ScheduleTask(title="from python"),
                actor_id="py-test",
            ),
            timeout=20,
        )
        self.assertEqual(created.schedule.created_by, "py-test")
        with self.assertRaises(grpc.RpcError) as ctx:
            self.ipa._stub.GetSchedule(schedules_pb2.GetScheduleRequest(name="missing"), timeout=20)
        self.assertEqual(IpaError.from_rpc_error(ctx.exception).reason, "SCHEDULE_NOT_FOUND")

    def test_cluster_info_names_a_lone_central_as_leader(self):
        from ipa.v1 import admin_pb2  # generated alongside

        info = self.ipa._stub.GetClusterInfo(admin_pb2.GetClusterInfoRequest(), timeout=20)
        self.assertTrue(info.leader_replica_id)
        self.assertGreaterEqual(info.epoch, 1)
        self.assertEqual([r.replica_id for r in info.replicas], [info.leader_replica_id])


if __name__ == "__main__":
    unittest.main()
