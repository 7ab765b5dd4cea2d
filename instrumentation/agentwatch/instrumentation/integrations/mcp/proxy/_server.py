"""The proxy's MCP server: every ``tools/call`` of every client session through the ``ToolGateway``.

One client session is one agentwatch run (``runtime = mcp-proxy``, agent from ``mcp.agent``,
tenant from the bearer token): the session's budget (``budgets`` of the config) counts every
call, the kill switch and policy are checked per call, and the run ends with the session with its
stop reason. Tools are listed and called as ``{upstream}.{tool}``, the name the policy sees.
Approvals go to the approver given to ``McpProxy``, else to the client's user through MCP
elicitation (a client without elicitation gets a rejection). Per-tenant upstream credentials
are the gateway's scoped credentials: the upstream connection of a call is the one opened with
the calling tenant's credentials, and they never reach a span.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import anyio
from opentelemetry.trace import SpanKind

from agentwatch.instrumentation import semconv
from agentwatch.instrumentation._approval import ApprovalDecision, ApprovalRequest, ApproverLike
from agentwatch.instrumentation._config import AgentWatchConfig
from agentwatch.instrumentation._gateway import ToolGateway
from agentwatch.instrumentation._run import agent_run
from agentwatch.instrumentation._settings import InstrumentationSettings
from agentwatch.instrumentation.errors import RunStopped
from agentwatch.instrumentation.integrations.mcp import _core
from agentwatch.instrumentation.integrations.mcp.proxy._settings import Control, ProxySettings, Upstream, proxy_settings
from agentwatch.instrumentation.integrations.mcp.proxy._upstreams import UpstreamPool, UpstreamUnavailable
from agentwatch.instrumentation.killswitch import EnvKillSwitch, KillSwitch, KillSwitchSource

if TYPE_CHECKING:
    from mcp.server.lowlevel import Server
    from opentelemetry.trace import TracerProvider
    from starlette.applications import Starlette
    from starlette.types import Message, Receive, Scope, Send

RUNTIME: Final = "mcp-proxy"
_MAX_SESSIONS_REMEMBERED: Final = 100_000
_APPROVAL_SCHEMA: Final = {
    "type": "object",
    "properties": {"approve": {"type": "boolean", "description": "Allow this tool call"}},
    "required": ["approve"],
}


@dataclass(slots=True)
class _Caller:
    """Who a session belongs to; shared (the same object) by the request that opened it and the session's tasks."""

    tenant: str | None
    session_id: str | None = None


_caller: Final[ContextVar[_Caller | None]] = ContextVar("agentwatch_mcp_proxy_caller", default=None)


class McpProxy:
    """An MCP server fronting the config's upstream MCP servers, governed by the config's gateway."""

    def __init__(
        self,
        config: AgentWatchConfig,
        *,
        approver: ApproverLike | None = None,
        kill_switch: KillSwitch | KillSwitchSource | None = None,
        tracer_provider: TracerProvider | None = None,
        settings: InstrumentationSettings | None = None,
    ) -> None:
        self.config = config
        self.settings: ProxySettings = proxy_settings(config)
        self.governance = _core.McpGovernance(on_denied=self.settings.on_denied, hide_denied=self.settings.hide_denied)
        self._closers: list[Callable[[], object]] = []
        control = self.settings.control
        if kill_switch is None:
            kill_switch = config.kill_switch.build()
            if control is not None and control.kill_switch:
                kill_switch = self._with_remote_kill_switch(kill_switch, control)
        if approver is None and control is not None and control.approvals:
            approver = self._remote_approver(control)
        self.gateway = ToolGateway(
            policy=config.policy,
            tools={},
            approver=approver if approver is not None else self._elicit_approval,
            credentials=self._credentials,
            kill_switch=kill_switch,
            approval_timeout=config.approval_timeout,
            tracer_provider=tracer_provider,
            settings=settings,
        )
        self._tracer_provider = tracer_provider
        self._instrumentation_settings = settings
        self._pool: UpstreamPool | None = None
        self._owners: dict[str, str | None] = {}  # downstream session id -> tenant that opened it
        self.server = self._build_server()

    def close(self) -> None:
        """Stop the control-plane threads and the approval workers."""
        for close in self._closers:
            close()
        self._closers.clear()
        self.gateway.close()

    # -- the gateway's collaborators ------------------------------------------------------------

    def _with_remote_kill_switch(self, configured: KillSwitch | None, control: Control) -> KillSwitch:
        from agentwatch.instrumentation._remote_control import RemoteKillSwitch

        sources: list[KillSwitchSource] = list(configured.sources) if configured is not None else [EnvKillSwitch()]
        # one reader per token: a tenant's token sees the scopes that tenant is under (global ones too)
        tokens: list[str | None] = [*([control.token] if control.token else []), *control.tenant_tokens.values()]
        for token in list(dict.fromkeys(tokens)) or [None]:
            remote = RemoteKillSwitch(control.url, token)
            self._closers.append(remote.close)
            sources.append(remote)
        return KillSwitch(*sources)

    def _remote_approver(self, control: Control) -> Callable[[ApprovalRequest], ApprovalDecision]:
        """The control plane's approver, with the calling tenant's token (so the approval is filed under it)."""
        from agentwatch.instrumentation._remote_control import RemoteApprover

        approvers: dict[str | None, RemoteApprover] = {}
        timeout = self.config.approval_timeout

        def approve(request: ApprovalRequest) -> ApprovalDecision:
            approver = approvers.get(request.tenant_id)
            if approver is None:
                approver = RemoteApprover(control.url, control.token_for(request.tenant_id), timeout=timeout)
                approvers[request.tenant_id] = approver
            return approver.approve(request)

        return approve

    def _credentials(self, tool: str, tenant: str | None) -> Mapping[str, str] | None:
        upstream = self.settings.upstream(tool.split(".", 1)[0])
        if upstream is None or not upstream.credentials:
            return None
        return upstream.credentials.get(tenant or "")

    async def _elicit_approval(self, request: ApprovalRequest) -> ApprovalDecision:
        context = self.server.request_context
        result = await context.session.elicit(
            message=f"Allow the tool call {request.tool} with {request.args}?",
            requestedSchema=_APPROVAL_SCHEMA,
            related_request_id=context.request_id,
        )
        approved = result.action == "accept" and bool((result.content or {}).get("approve"))
        return ApprovalDecision(approved, approver="mcp-client", reason=None if approved else f"client {result.action}")

    # -- the MCP server -------------------------------------------------------------------------

    def _build_server(self) -> Server[Any, Any]:
        from mcp import types
        from mcp.server.lowlevel import Server

        proxy = self

        class _SessionRuns(Server[Any, Any]):
            async def run(self, *args: Any, **kwargs: Any) -> None:  # one client session
                async with proxy._session_run():
                    await super().run(*args, **kwargs)

        server: Server[Any, Any] = _SessionRuns("agentwatch-mcp-proxy")

        @server.list_tools()  # type: ignore[no-untyped-call, untyped-decorator]
        async def list_tools() -> list[types.Tool]:
            return await proxy._list_tools()

        @server.call_tool(validate_input=False)  # type: ignore[untyped-decorator]
        async def call_tool(name: str, arguments: dict[str, Any] | None) -> types.CallToolResult:
            result: types.CallToolResult = await proxy._call_tool(name, arguments or {})
            return result

        return server

    @contextlib.asynccontextmanager
    async def _session_run(self) -> AsyncIterator[None]:
        caller = _caller.get() or _Caller(tenant=self.settings.listen.tenant)
        async with agent_run(
            self.settings.agent,
            tenant_id=caller.tenant,
            budget=self.config.budget,
            gateway=self.gateway,
            runtime=RUNTIME,
            conversation_id=caller.session_id,
            tracer_provider=self._tracer_provider,
            settings=self._instrumentation_settings,
        ):
            token = _caller.set(caller)
            try:
                yield
            finally:
                _caller.reset(token)

    def _require_pool(self) -> UpstreamPool:
        if self._pool is None:
            raise RuntimeError("the proxy is not running: use serve_stdio(), serve_http() or running()")
        return self._pool

    async def _list_tools(self) -> list[Any]:
        caller = _caller.get()
        tenant = caller.tenant if caller is not None else None
        listed: list[Any] = []
        for upstream in self.settings.upstreams:
            credentials = self._credentials(f"{upstream.name}.", tenant)
            if upstream.credentials and credentials is None:
                continue  # this tenant has no access to the upstream
            try:
                session = await self._require_pool().session(upstream, credentials or {})
                result = await session.list_tools()
            except UpstreamUnavailable:
                continue
            for tool in result.tools:
                if _core.is_listed(self.gateway, upstream.name, tool.name, self.governance):
                    listed.append(tool.model_copy(update={"name": _core.qualified_name(upstream.name, tool.name)}))
        return listed

    async def _call_tool(self, name: str, arguments: dict[str, Any]) -> Any:
        from mcp import types

        server_name, _, tool = name.partition(".")
        upstream = self.settings.upstream(server_name)
        context = self.server.request_context
        caller = _caller.get()
        meta = context.meta.model_extra if context.meta is not None else None

        def refused(text: str) -> types.CallToolResult:
            return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=True)

        server = server_name if tool else _core.UNNAMED_SERVER
        attributes = _core.span_attributes(
            server=server,
            tool=tool or name,
            session_id=caller.session_id if caller is not None else None,
            transport="tcp" if self.settings.listen.transport == "http" else "pipe",
        )
        attributes[semconv.JSONRPC_REQUEST_ID] = str(context.request_id)
        send = self._sender(upstream, tool, meta)
        run, _ = _core.runtime_run()
        try:
            return await _core.governed_call(
                server=server,
                tool=tool or name,
                arguments=arguments,
                send=send,
                refused=refused,
                attributes=attributes,
                run=run,
                scope=contextlib.nullcontext(),
                gateway=self.gateway,
                settings=self.governance,
                remote_kind=SpanKind.SERVER,
                idempotency_key=_core.idempotency_key_of(meta),
                links=_core.caller_links(meta),
            )
        except RunStopped as exc:  # budget, kill switch, or a denial with on_denied=stop: the session's run is over
            return refused(f"Tool call refused: the session was stopped ({exc.stop_reason.value}). {exc}")
        except UpstreamUnavailable as exc:
            return refused(str(exc))

    def _sender(
        self, upstream: Upstream | None, tool: str, meta: Mapping[str, Any] | None
    ) -> Callable[..., Awaitable[Any]]:
        from mcp import types

        pool = self._require_pool()

        async def send(credentials: Mapping[str, str], **arguments: Any) -> Any:
            if upstream is None:
                raise UpstreamUnavailable("no such upstream")
            if upstream.credentials and not credentials:
                raise PermissionError(f"no credentials for this tenant on upstream {upstream.name}")
            session = await pool.session(upstream, credentials)
            traced = _core.with_trace_context(
                {k: v for k, v in (meta or {}).items() if k not in ("traceparent", "tracestate")}
            )
            request = types.ClientRequest(
                types.CallToolRequest(
                    params=types.CallToolRequestParams(
                        name=tool, arguments=arguments, _meta=types.RequestParams.Meta(**traced)
                    )
                )
            )
            result = await session.send_request(request, types.CallToolResult)
            return _core.error_result_of(result)

        return send

    # -- serving --------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[McpProxy]:
        """Open the upstream pool for the block (``serve_*`` do this themselves)."""
        async with anyio.create_task_group() as task_group:
            self._pool = UpstreamPool(task_group)
            try:
                yield self
            finally:
                self._pool.close()
                self._pool = None

    async def serve_stdio(self) -> None:
        """Serve one client over this process's stdin/stdout."""
        from mcp.server.stdio import stdio_server

        async with self.running(), stdio_server() as (read, write):
            await self.server.run(read, write, self.server.create_initialization_options())

    def asgi_app(self) -> Starlette:
        """The Streamable HTTP app (``settings.listen.path``), bearer tokens mapped to tenants."""
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
        from starlette.applications import Starlette
        from starlette.routing import Route

        # SSE responses (not JSON): approvals elicit from the client during a call. Without tokens the
        # proxy is loopback-only; DNS-rebinding protection keeps a web page from reaching it there.
        manager = StreamableHTTPSessionManager(app=self.server, security_settings=self._transport_security())
        proxy = self

        class _Endpoint:  # an ASGI app, not a request handler: Starlette passes every method through
            async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
                await proxy._handle_http(manager, scope, receive, send)

        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            async with self.running(), manager.run():
                yield

        return Starlette(routes=[Route(self.settings.listen.path, endpoint=_Endpoint())], lifespan=lifespan)

    def _transport_security(self) -> Any:
        from mcp.server.transport_security import TransportSecuritySettings

        if self.settings.tokens:
            return None  # a browser cannot send the bearer token
        hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", f"{self.settings.listen.host}:*"]
        origins = [f"http://{host}" for host in hosts]
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
        )

    async def _handle_http(self, manager: Any, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope.get("headers", [])}
        tenant = self._tenant(headers.get("authorization", ""))
        if tenant is False:
            await _plain(send, 401, "missing or unknown bearer token", {"www-authenticate": "Bearer"})
            return
        session_id = headers.get("mcp-session-id")
        if session_id is not None and session_id in self._owners and self._owners[session_id] != tenant:
            await _plain(send, 403, "this session belongs to another tenant")
            return
        caller = _Caller(tenant=tenant if isinstance(tenant, str) else None, session_id=session_id)
        token = _caller.set(caller)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start" and session_id is None:
                for key, value in message.get("headers", []):
                    if key.decode("latin-1").lower() == "mcp-session-id":
                        caller.session_id = value.decode("latin-1")
                        self._owners.setdefault(caller.session_id, caller.tenant)
                        while len(self._owners) > _MAX_SESSIONS_REMEMBERED:  # the oldest sessions first
                            self._owners.pop(next(iter(self._owners)))
            await send(message)

        try:
            await manager.handle_request(scope, receive, sending)
        finally:
            _caller.reset(token)

    def _tenant(self, authorization: str) -> str | bool | None:
        """The tenant of a bearer token (None: no tokens configured); False: refused."""
        if not self.settings.tokens:
            return None
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return False
        for known, tenant in self.settings.tokens.items():
            if hmac.compare_digest(known.encode(), presented.strip().encode()):
                return tenant
        return False

    async def serve_http(self, *, host: str | None = None, port: int | None = None) -> None:
        """Serve Streamable HTTP until cancelled."""
        import uvicorn

        listen = self.settings.listen
        config = uvicorn.Config(
            self.asgi_app(),
            host=host or listen.host,
            port=port if port is not None else listen.port,
            log_level="warning",
        )
        await uvicorn.Server(config).serve()


async def _plain(send: Send, status: int, text: str, headers: Mapping[str, str] | None = None) -> None:
    raw = [(b"content-type", b"text/plain; charset=utf-8")]
    raw += [(key.encode(), value.encode()) for key, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": text.encode()})
