"""The hello plugin: rustbridge's hello-plugin message types, written as a plugbridge plugin.

Type tags: echo, greet, user.create, math.add, test.sleep, bench.small, bench.medium,
bench.large. Load it with ``plugbridge.load("examples/hello/hello_plugin.py")``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import msgspec

from plugbridge import Plugin, PluginContext, handler

log = logging.getLogger(__name__)


class EchoRequest(msgspec.Struct):
    message: str


class EchoResponse(msgspec.Struct):
    message: str
    length: int


class GreetRequest(msgspec.Struct):
    name: str


class GreetResponse(msgspec.Struct):
    greeting: str


class CreateUserRequest(msgspec.Struct):
    username: str
    email: str


class CreateUserResponse(msgspec.Struct):
    user_id: str
    created_at: str


class AddRequest(msgspec.Struct):
    a: int
    b: int


class AddResponse(msgspec.Struct):
    result: int


class SleepRequest(msgspec.Struct):
    duration_ms: int


class SleepResponse(msgspec.Struct):
    slept_ms: int


class SmallRequest(msgspec.Struct):
    key: str
    flags: int


class SmallResponse(msgspec.Struct):
    value: str
    ttl_seconds: int
    cache_hit: bool


class MediumOptions(msgspec.Struct):
    include_metadata: bool
    include_permissions: bool
    max_results: int


class MediumRequest(msgspec.Struct):
    user_id: int
    include_fields: list[str]
    options: MediumOptions


class KeyValue(msgspec.Struct):
    key: str
    value: str


class MediumResponse(msgspec.Struct):
    user_id: int
    username: str
    email: str
    display_name: str
    metadata: list[KeyValue]
    permissions: list[str]
    created_at: int
    updated_at: int


class Filter(msgspec.Struct):
    field: str
    operator: str
    value: str


class LargeRequest(msgspec.Struct):
    query_id: int
    filters: list[Filter]
    page_size: int
    page_token: str | None = None


class Record(msgspec.Struct):
    id: int
    name: str
    description: str
    category: str
    tags: list[str]
    score: float
    metadata: list[KeyValue]
    created_at: int


class LargeResponse(msgspec.Struct):
    query_id: int
    results: list[Record]
    total_count: int
    next_page_token: str | None


PERMISSIONS = [
    "read", "write", "delete", "admin", "users.read", "users.write", "reports.read",
    "reports.write", "settings.read", "settings.write", "audit.read", "billing.read",
    "billing.write", "api.access", "webhooks.manage",
]  # fmt: skip


class HelloPlugin(Plugin):
    name = "hello-plugin"
    version = "1.0.0"

    def __init__(self) -> None:
        self._user_ids = itertools.count()

    async def on_start(self, ctx: PluginContext) -> None:
        log.info("HelloPlugin starting (log level %s)", ctx.config.log_level.name)

    async def on_stop(self, ctx: PluginContext) -> None:
        log.info("HelloPlugin stopping")

    @handler("echo")
    def echo(self, ctx: PluginContext, req: EchoRequest) -> EchoResponse:
        log.debug("Handling echo request: %s", req.message)
        return EchoResponse(message=req.message, length=len(req.message.encode()))

    @handler("greet")
    def greet(self, ctx: PluginContext, req: GreetRequest) -> GreetResponse:
        log.debug("Handling greet request for %s", req.name)
        return GreetResponse(greeting=f"Hello, {req.name}! Welcome to plugbridge.")

    @handler("user.create")
    def create_user(self, ctx: PluginContext, req: CreateUserRequest) -> CreateUserResponse:
        log.info("Creating user: %s (%s)", req.username, req.email)
        number = next(self._user_ids)
        return CreateUserResponse(user_id=f"user-{number:08x}", created_at=f"{int(time.time())}Z")

    @handler("math.add")
    def add(self, ctx: PluginContext, req: AddRequest) -> AddResponse:
        log.debug("Adding %d + %d", req.a, req.b)
        return AddResponse(result=req.a + req.b)

    @handler("test.sleep")
    async def sleep(self, ctx: PluginContext, req: SleepRequest) -> SleepResponse:
        log.debug("Sleeping for %d ms", req.duration_ms)
        await asyncio.sleep(req.duration_ms / 1000)
        return SleepResponse(slept_ms=req.duration_ms)

    @handler("bench.small")
    def bench_small(self, ctx: PluginContext, req: SmallRequest) -> SmallResponse:
        return SmallResponse(
            value=f"value_for_{req.key}", ttl_seconds=3600, cache_hit=bool(req.flags & 1)
        )

    @handler("bench.medium")
    def bench_medium(self, ctx: PluginContext, req: MediumRequest) -> MediumResponse:
        uid = req.user_id
        metadata = (
            [KeyValue(f"meta_key_{i}", f"meta_value_{i}_for_user_{uid}") for i in range(10)]
            if req.options.include_metadata
            else []
        )
        return MediumResponse(
            user_id=uid,
            username=f"user_{uid}",
            email=f"user_{uid}@example.com",
            display_name=f"User Number {uid}",
            metadata=metadata,
            permissions=list(PERMISSIONS) if req.options.include_permissions else [],
            created_at=1700000000,
            updated_at=1705000000,
        )

    @handler("bench.large")
    def bench_large(self, ctx: PluginContext, req: LargeRequest) -> LargeResponse:
        count = min(req.page_size, 1000)
        results = [
            Record(
                id=req.query_id * 10000 + i,
                name=f"Record {i} for query {req.query_id}",
                description=(
                    f"This is a detailed description for record {i}. It contains enough text"
                    f" to make the payload realistic. Query ID: {req.query_id},"
                    f" Filters: {len(req.filters)}"
                ),
                category=f"category_{i % 10}",
                tags=[f"tag_a_{i % 5}", f"tag_b_{i % 7}", f"tag_c_{i % 3}"],
                score=i * 0.1 + 0.5,
                metadata=[KeyValue("source", "benchmark"), KeyValue("version", "1.0")],
                created_at=1700000000 + i * 1000,
            )
            for i in range(count)
        ]
        return LargeResponse(
            query_id=req.query_id,
            results=results,
            total_count=count * 10,
            next_page_token=f"token_{req.query_id}_{count}",
        )
