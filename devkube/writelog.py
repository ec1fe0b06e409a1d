"""
A log of every mutating client request, for "no spurious writes" assertions.

Only HTTP requests are logged (POST, PUT, PATCH, DELETE to API resources), including the
rejected ones (see ``status``); the emulator's own in-process writes (the fake workload
controller, test setup via ``put_object``) never appear here.
"""

from __future__ import annotations

import dataclasses
from types import EllipsisType
from typing import Any

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclasses.dataclass(frozen=True)
class WriteRecord:
    seq: int
    method: str
    path: str
    group: str
    version: str
    resource: str  # the plural name, e.g. "deployments"
    namespace: str | None
    name: str | None  # for POST: the created object's name (also when generated)
    subresource: str | None
    user_agent: str
    content_type: str
    body: Any
    status: int  # the HTTP status of the response

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status < 300


class WriteLog:
    def __init__(self) -> None:
        self._records: list[WriteRecord] = []

    def mark(self) -> int:
        """The sequence number the next write will get: ``writes(since=mark())`` sees only newer ones."""
        return len(self._records)

    def append(self, **fields: Any) -> WriteRecord:
        record = WriteRecord(seq=len(self._records), **fields)
        self._records.append(record)
        return record

    def select(
        self,
        since: int = 0,
        *,
        user_agent: str | None = None,
        resource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        method: str | None = None,
        subresource: str | EllipsisType | None = ...,
        succeeded: bool | None = None,
    ) -> list[WriteRecord]:
        """
        Filter the writes. ``user_agent`` is a substring (e.g. ``"kopf"``); ``resource`` is
        a plural name, optionally qualified (``"deployments"`` or ``"deployments.apps"``);
        ``subresource=None`` means writes to the objects themselves, ``...`` means any.
        """
        return [
            record
            for record in list(self._records)[since:]
            if user_agent is None or user_agent in record.user_agent
            if resource is None or resource in (record.resource, f"{record.resource}.{record.group}")
            if namespace is None or record.namespace == namespace
            if name is None or record.name == name
            if method is None or record.method == method.upper()
            if isinstance(subresource, EllipsisType) or record.subresource == subresource
            if succeeded is None or record.succeeded == succeeded
        ]
