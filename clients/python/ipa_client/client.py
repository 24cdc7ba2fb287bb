"""The client: one method per task operation, proto messages in and out,
errors as `IpaError` with the server's reason."""

from __future__ import annotations

import pathlib
import sys
import types
from typing import Iterator, Mapping, Optional, Union

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

_GENERATED = pathlib.Path(__file__).resolve().parent / "_generated"
if not (_GENERATED / "ipa" / "v1" / "central_manager_pb2.py").exists():
    raise ImportError(
        f"the ipa.v1 stubs are missing in {_GENERATED}: run `python clients/python/generate.py`"
    )
# The generated modules import each other as `ipa.v1.…`.
if str(_GENERATED) not in sys.path:
    sys.path.insert(0, str(_GENERATED))

from ipa.v1 import admin_pb2, central_manager_pb2, central_manager_pb2_grpc, common_pb2  # noqa: E402

# Every generated message and enum under one name: `pb.Task`, `pb.TaskStatus`.
pb = types.SimpleNamespace()
for _module in (common_pb2, admin_pb2, central_manager_pb2):
    for _name in dir(_module):
        if not _name.startswith("_"):
            setattr(pb, _name, getattr(_module, _name))

ERROR_DOMAIN = "ipa.v1"


class IpaError(Exception):
    """A failed call. `reason` is the API's error reason (TASK_NOT_FOUND,
    NO_POD_HOST, …) taken from the google.rpc.ErrorInfo detail when the
    server sent one (then `domain` is "ipa.v1"), else from the message's
    `REASON: ` prefix, else the gRPC code's name."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str, domain: str = ""):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.domain = domain

    @classmethod
    def from_rpc_error(cls, err: grpc.RpcError) -> "IpaError":
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        message = err.details() if hasattr(err, "details") else str(err)
        message = message or ""
        status = rpc_status.from_call(err) if isinstance(err, grpc.Call) else None
        if status is not None:
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return cls(code, info.reason, message, info.domain)
        head, sep, _ = message.partition(": ")
        if sep and head.replace("_", "").isalnum() and head.isupper():
            return cls(code, head, message)
        return cls(code, code.name, message)

    def __str__(self) -> str:
        if self.message.startswith(self.reason + ": "):
            return self.message
        return f"{self.reason}: {self.message}"


StatusLike = Union[str, int, None]


def _enum(enum, prefix: str, value: StatusLike) -> int:
    """`"active"`, `"TASK_STATUS_ACTIVE"` or a number → the enum number;
    None → 0 (unset)."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    name = value.upper()
    if not name.startswith(prefix):
        name = prefix + name
    return enum.Value(name)


class Client:
    """A connection to central-manager.

    `actor` is the actor_id of mutating calls; `token` is sent as
    `authorization: Bearer …`; `credentials` (grpc.ssl_channel_credentials)
    switches to TLS; `timeout` bounds every unary call, in seconds.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        actor: str = "python",
        token: Optional[str] = None,
        credentials: Optional[grpc.ChannelCredentials] = None,
        timeout: float = 30.0,
    ):
        if credentials is not None:
            self._channel = grpc.secure_channel(target, credentials)
        else:
            self._channel = grpc.insecure_channel(target)
        self._stub = central_manager_pb2_grpc.CentralManagerStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.actor = actor
        self.timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise IpaError.from_rpc_error(err) from None

    # --- tasks ---------------------------------------------------------

    def create(
        self,
        title: str,
        *,
        description: str = "",
        metadata: Optional[Mapping[str, str]] = None,
        template: str = "",
        auto_start: bool = False,
        request_id: str = "",
        correlation_id: str = "",
    ) -> "central_manager_pb2.Task":
        """Creates a task (and starts its pod with auto_start); the task."""
        req = central_manager_pb2.CreateTaskRequest(
            title=title,
            description=description,
            actor_id=self.actor,
            correlation_id=correlation_id,
            auto_start=auto_start,
            metadata=dict(metadata or {}),
            template=template,
            request_id=request_id,
        )
        return self._call(self._stub.CreateTask, req).task

    def get(self, task_id: str) -> "central_manager_pb2.Task":
        return self._call(self._stub.GetTask, central_manager_pb2.GetTaskRequest(task_id=task_id))

    def list(
        self,
        *,
        status: StatusLike = None,
        phase: StatusLike = None,
        created_by: str = "",
        limit: int = 100,
        offset: int = 0,
    ) -> "list[central_manager_pb2.Task]":
        """Tasks, newest updated first. `status`/`phase` take short names
        ("active", "review") or full enum names."""
        req = central_manager_pb2.ListTasksRequest(
            status=_enum(common_pb2.TaskStatus, "TASK_STATUS_", status),
            phase=_enum(common_pb2.Phase, "PHASE_", phase),
            created_by=created_by,
            limit=limit,
            offset=offset,
        )
        return list(self._call(self._stub.ListTasks, req).tasks)

    def start(self, task_id: str, *, correlation_id: str = "") -> "central_manager_pb2.Pod":
        req = central_manager_pb2.StartPodRequest(
            task_id=task_id, actor_id=self.actor, correlation_id=correlation_id
        )
        return self._call(self._stub.StartPod, req).pod

    def stop(self, task_id: str, reason: str = "", *, correlation_id: str = "") -> None:
        req = central_manager_pb2.StopPodRequest(
            task_id=task_id, actor_id=self.actor, reason=reason, correlation_id=correlation_id
        )
        self._call(self._stub.StopPod, req)

    def complete(self, task_id: str, *, correlation_id: str = "") -> None:
        req = central_manager_pb2.CompleteTaskRequest(
            task_id=task_id, actor_id=self.actor, correlation_id=correlation_id
        )
        self._call(self._stub.CompleteTask, req)

    def cancel(self, task_id: str, reason: str, *, correlation_id: str = "") -> None:
        req = central_manager_pb2.CancelTaskRequest(
            task_id=task_id, reason=reason, actor_id=self.actor, correlation_id=correlation_id
        )
        self._call(self._stub.CancelTask, req)

    # --- events --------------------------------------------------------

    def watch_events(
        self, *, after_position: int = 0, task_id: str = ""
    ) -> Iterator["central_manager_pb2.Event"]:
        """Every event after `after_position` (all from 0), then live ones as
        they commit; resumable from the last `position` seen. Stop
        iterating (or close the client) to end the stream."""
        req = central_manager_pb2.WatchEventsRequest(after_position=after_position, task_id=task_id)
        stream = self._stub.WatchEvents(req, metadata=self._metadata)
        try:
            for event in stream:
                yield event
        except grpc.RpcError as err:
            raise IpaError.from_rpc_error(err) from None
        finally:
            stream.cancel()
