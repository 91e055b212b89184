"""`roast serve` (issue 15): the HTTP face over `api`, beside `cli`.

Events arrive over HTTP (`POST /v1/sessions/{id}/events/{event}`, or by correlation key), people
answer waits through signed links (`/a/{token}`), and the resident process fires deadlines on
time and continues orphaned sessions. A delivery is claimed in the request (`api.resume(...,
run=False)`: the claim commits before the answer) and its branch runs afterwards in this process's
worker pool (`api.run_claimed`), so a slow step never holds a connection and a busy pool never
delays a claim.

A face: no SQL, no step logic, no store module (SPEC §11) — everything goes through `api`. It
refuses to run insecurely rather than warn: loopback only unless a credential is configured;
bearer tokens and webhook signatures are compared in constant time; the raw body is verified
before it is parsed; bodies and auth headers are never logged or stored. Starlette and Uvicorn are
the optional extra `roast-workflows[serve]`; the module itself imports only the standard library at load
time, because `roast --version` builds the parser that `add_parser` extends.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from roast.errors import EventLate, Interrupted, RequestRefused, RoastError, Unauthorized, UsageError
from roast.approval_html import routes as routes_for_people
from roast.serve_intake import loopback, read_tokens_file
from roast.views import COUNT_CAP, refusal_document

# typing and threading load only when `roast serve` runs: the CLI imports this module for its
# parser on every command, `roast resume` included (start-up, issue 12)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from starlette.requests import Request
    from starlette.responses import Response

    from roast.display import Log
    from roast.serve_claims import Bound


EXTRA = "pip install 'roast-workflows[serve]'"
CLAIM_THREADS = 8    # a page's claims in flight at once on a shared (PostgreSQL) store; SQLite: 1
CLAIM_PROCESSES = 2  # claim processes for the deliveries on a shared store (issue 25); SQLite: 1
READ_THREADS = 16    # listings, pages and health checks in flight at once
VERIFY_THREADS = 2   # SSH signature checks (ssh-keygen, unauthenticated) at once: a flood never takes the readers
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}

# --------------------------------------------------------------------------- the command line


def add_parser(sub: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """The `serve` subcommand (no side effects: the man page is built from it)."""
    p = sub.add_parser("serve", parents=list(parents), help="serve events, approval links and deadlines over HTTP",
                       description="Run in the foreground against the same store as the CLI (ROAST_HOME / "
                                   "ROAST_STORE): deliver events over HTTP, serve approval pages for signed "
                                   "links, fire deadlines on time and continue interrupted sessions. Logs to "
                                   "stderr. Needs the serve extra: " + EXTRA + ".",
                       epilog="Credentials (environment): ROAST_SERVE_TOKENS (bearer tokens, space-separated, "
                              "each TOKEN or NAME:TOKEN), ROAST_WEBHOOK_SECRET (Standard Webhooks whsec_ "
                              "secrets, space-separated), ROAST_GITHUB_WEBHOOK_SECRET (X-Hub-Signature-256). "
                              "Once any is set, every request needs one. ROAST_PUBLIC_URL is where approval "
                              "links point.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but loopback needs a credential configured "
                        "(default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="TCP port; 0 lets the OS pick one (default: 8765)")
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="branches run at once by this server, each session's steps in their own process "
                        "groups (default: 2)")
    p.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM, how long running branches may finish before they are stopped and left "
                        "recoverable (default: 30)")
    p.add_argument("--webhook-tolerance", type=float, default=300.0, metavar="SECONDS",
                   help="how far a Standard Webhooks timestamp may be from now (default: 300)")
    p.add_argument("--tokens-file", metavar="FILE",
                   help="bearer tokens, one per line (TOKEN or NAME:TOKEN, # comments), mode 0600; used "
                        "with ROAST_SERVE_TOKENS (default: none)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="one line per request and per session transition, as text or JSON (default: text)")
    p.set_defaults(handler=main)
    return p


def run_from_argv(argv: Sequence[str]) -> int:
    """`roast serve ARGS` without the rest of the CLI (tests, and `python -c` use)."""
    parser = argparse.ArgumentParser(prog="roast")
    add_parser(parser.add_subparsers(dest="command"))
    return main(parser.parse_args(["serve", *argv]))


def main(args: argparse.Namespace) -> int:
    """Run the server until SIGTERM or SIGINT; 0 after a clean stop, 2 for a usage error (an
    insecure bind, a bad credential, the extra missing), 4 when the store is unavailable."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        print(f"roast: error: `roast serve` needs Starlette and Uvicorn, which are not installed\n"
              f"  hint: {EXTRA}", file=sys.stderr)
        return 2
    try:
        config = configure(args, os.environ)
    except RoastError as err:
        print(f"roast: error: {err}", file=sys.stderr)
        return err.exit_code
    return _serve(config)


class Config:
    """What `roast serve` runs with, checked: every credential parsed, the bind allowed."""

    __slots__ = ("github_secret", "grace", "host", "log_format", "port", "public_host", "tokens", "tolerance",
                 "webhook_secrets", "workers", "proxies", "identity_header", "webhook_names")
    github_secret: bytes | None
    grace: float
    host: str
    log_format: str
    port: int
    public_host: str | None
    tokens: list[tuple[str, bytes]]
    tolerance: float
    webhook_secrets: list[bytes]
    workers: int
    proxies: frozenset[str]
    webhook_names: list[str | None]
    identity_header: str | None

    def __init__(self, **values: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, values[name])

    @property
    def authenticated(self) -> bool:
        return bool(self.tokens or self.webhook_secrets or self.github_secret or self.proxies)


def configure(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """Check the options and credentials; UsageError (exit 2) for anything insecure or malformed."""
    from roast import api, settings

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a TCP port (0 to 65535)")
    if args.workers < 1:
        raise UsageError(f"--workers {args.workers}: at least one worker runs the branches")
    if not 0 <= args.grace < float("inf") or not 0 < args.webhook_tolerance < float("inf"):
        raise UsageError(f"--grace {args.grace:g} / --webhook-tolerance {args.webhook_tolerance:g}: --grace must be "
                         "a finite number of seconds, 0 or more, and --webhook-tolerance more than 0",
                         hint="e.g. --grace 30 --webhook-tolerance 300 (the defaults)")
    tokens = settings.serve_tokens(environ)
    if args.tokens_file:
        tokens += settings.parse_tokens(read_tokens_file(args.tokens_file), args.tokens_file)
    # issue 22: `NAME:whsec_…` names the sender, recorded as the actor of what it delivers
    named = [item.partition(":") if item.partition(":")[2].startswith("whsec_") else (None, "", item)
             for item in (settings.webhook_secret(environ) or "").split()]
    secrets = api.webhook_secrets(" ".join(secret for _, _, secret in named))
    github = settings.github_webhook_secret(environ)
    if github is not None and len(github) < 16:
        raise UsageError("ROAST_GITHUB_WEBHOOK_SECRET is shorter than 16 characters; refusing a guessable secret")
    public = settings.public_url(environ)
    public_host = None
    if public:
        from urllib.parse import urlsplit

        parts = urlsplit(public)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"ROAST_PUBLIC_URL {public!r} is not an http(s) URL",
                             hint="e.g. ROAST_PUBLIC_URL=https://roast.example.com")
        public_host = parts.hostname.lower()
    proxies, identity_header = settings.trusted_proxies(environ)
    config = Config(host=args.host, port=args.port, workers=args.workers, grace=args.grace,
                    tolerance=args.webhook_tolerance, log_format=args.log_format, tokens=tokens,
                    webhook_secrets=secrets, github_secret=github.encode() if github else None,
                    public_host=public_host, proxies=proxies, identity_header=identity_header,
                    webhook_names=[name for name, _, _ in named])
    if not loopback(args.host) and not config.authenticated:  # judged resolved, not by name (issue 21)
        # reliability §4.2, Hermes #21346: a public bind is an explicit choice that needs a secret
        raise UsageError(f"refusing to listen on {args.host} without authentication; nothing was started",
                         hint="set ROAST_SERVE_TOKENS (or --tokens-file), ROAST_WEBHOOK_SECRET or "
                              "ROAST_GITHUB_WEBHOOK_SECRET, or listen on 127.0.0.1")
    return config


# --------------------------------------------------------------------------- logging


# --------------------------------------------------------------------------- authentication


class Principal:
    """Who a request is: the actor recorded with its delivery, the event id its headers carry, and
    the source."""

    __slots__ = ("actor", "event_id", "signature", "source", "verified")

    def __init__(self, actor: str, event_id: str | None, source: str, verified: bool = False,
                 signature: str | None = None) -> None:
        self.actor, self.event_id, self.source, self.verified = actor, event_id, source, verified
        self.signature = signature  # a signed request's, bound to where it is first delivered (issue 21)


def authenticate(config: Config, headers: Mapping[str, str], body: bytes | None, now: float, *,
                 client: str | None = None, proxy_only: bool = False) -> Any:
    """Check a request's credential. A signature (Standard Webhooks, then GitHub) is verified over
    the raw `body` and needs no token; otherwise a bearer token; with no credential configured
    (loopback only) anyone local may call. `body=None`: a GET, where only a token counts."""
    import hashlib
    import hmac

    from roast import api

    idempotency = headers.get("idempotency-key") or headers.get("webhook-id") or None
    # issue 22: behind a trusted proxy (SSO), its identity header says who; from anywhere else it is ignored
    person = headers.get(config.identity_header) if config.identity_header and client in config.proxies else None
    if proxy_only:
        return Principal(person.strip()[:200], idempotency, "proxy", True) if person and person.strip() else None
    if body is not None and headers.get("webhook-signature") is not None:
        msg_id = api.verify_webhook(config.webhook_secrets, headers, body, now=now, tolerance=config.tolerance)
        return Principal(_sender(config, headers, body, now) or f"webhook:{msg_id}", msg_id, "webhook", True,
                         f"webhook-id:{msg_id}")
    if body is not None and headers.get("x-hub-signature-256") is not None:
        delivery = api.verify_github(config.github_secret, headers, body)
        signed = headers["x-hub-signature-256"].strip().lower()
        return Principal("github", delivery, "github", True, f"github:{signed}")
    if person and person.strip():
        return Principal(person.strip()[:200], idempotency, "proxy", True)
    given = headers.get("authorization")
    if given is None:
        if config.authenticated:
            raise Unauthorized("this server needs a credential: a bearer token (Authorization: Bearer …), or a "
                               "Standard Webhooks or GitHub signature")
        return Principal("local", idempotency, "http")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header is not `Bearer TOKEN`")
    digest = hashlib.sha256(token.strip().encode("utf-8", "replace")).digest()
    found = None
    for name, secret in config.tokens:  # all compared: the time taken says nothing about which matched
        if hmac.compare_digest(digest, hashlib.sha256(secret).digest()) and found is None:
            found = name
    if found is None:
        raise Unauthorized("the bearer token is not valid")
    return Principal(found, idempotency, "http", True)


def _sender(config: Config, headers: Mapping[str, str], body: bytes, now: float) -> str | None:
    """The name of the `NAME:whsec_…` secret a verified request was signed with (None: unnamed)."""
    from roast import api

    for name, secret in zip(config.webhook_names, config.webhook_secrets):
        if name is not None:
            try:
                api.verify_webhook([secret], headers, body, now=now, tolerance=config.tolerance)
                return name
            except RoastError:
                continue
    return None


# --------------------------------------------------------------------------- documents


def deliver(api: Any, event: str, body: bytes, principal: Principal, *, session_id: str | None = None,
            workflow: str | None = None, key: str | None = None, reason: str | None = None,
            wait_seq: int | None = None) -> Any:
    """Claim `event` through `api` (the module, or a `Bound` one) without running the branch; return
    the api's Result; refusals raise."""
    common: dict[str, Any] = {"data": body or None, "event_id": principal.event_id, "actor": principal.actor,
              "source": principal.source, "reason": reason, "run": False, "verified": principal.verified}
    if principal.signature is not None:  # bound to the first session and event it reaches (issue 21)
        common["signature"] = principal.signature
    if session_id is not None:
        if wait_seq is not None:  # an approval link: for its own wait only, checked in the claim itself
            common["wait_seq"] = wait_seq
        return api.resume(event, session_id=session_id, **common)
    assert workflow is not None and key is not None
    return api.resume(event, workflow=api.workflow_named(workflow, key), key=key, **common)


# --------------------------------------------------------------------------- the ASGI app


def build_app(config: Config, runtime: Any, api: Bound, log: Log) -> Any:
    """The Starlette app: deliveries are claimed in the server's claim process (`serve_claims`), every
    other api call in a thread here."""
    import anyio
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import Response
    from starlette.routing import Route

    from roast import approvals, serve_claims, serve_intake, settings

    limiters: dict[str, Any] = {}
    # SQLite has one writer at a time: its claims take turns, those waiting at once committed together
    # (16 threads sleeping in its busy handler were slower: 180 vs 330 claims/s, p99 1 s vs 5 ms);
    # a page's claims on PostgreSQL: CLAIM_THREADS at once. Deliveries in the claim processes (issue
    # 25), batched like SQLite's: CLAIM_PROCESSES of them on PostgreSQL (one process making 8 claims
    # at once on threads, each its own transaction, gave ~430 claims/s; two batching ones ~780/s)
    shared = getattr(api.store, "shared", False)
    claim_threads = CLAIM_THREADS if shared else 1
    claims = serve_claims.Claims(api, log=log, sends=(deliver, approvals.deliver_checked),
                                 processes=CLAIM_PROCESSES if shared else 1)
    runtime.quiet = claims.quiet  # its look for orphans waits for the claims in flight

    async def claim(fn: Callable[..., Any], *args: Any, together: bool = False, route: str | None = None,
                    **kwargs: Any) -> Any:
        """A claim (`together`: a delivery that may share a transaction with others waiting; `route`:
        the session or workflow it is for: while one of its claims is in flight, the next go to the
        same claim process)."""
        runtime.claiming += 1  # on the event loop's thread only
        runtime.idle.clear()
        try:
            if together or claim_threads == 1:
                return await claims(fn, *args, together=together, route=route, **kwargs)
            return await call(fn, *args, writes=True, **kwargs)  # PostgreSQL: a page's claim, on a thread here
        finally:
            runtime.claiming -= 1
            if not runtime.claiming:
                runtime.claimed_at = time.monotonic()
                runtime.idle.set()

    async def call(fn: Callable[..., Any], *args: Any, writes: bool = False, pool: str | None = None,
                   **kwargs: Any) -> Any:
        kind = pool or ("claims" if writes else "reads")
        if kind not in limiters:  # made on the event loop's thread, as anyio wants
            limiters[kind] = anyio.CapacityLimiter({"claims": claim_threads, "verify": VERIFY_THREADS}.get(kind, READ_THREADS))
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=limiters[kind])

    def as_json(doc: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        return Response(json.dumps(doc, ensure_ascii=False, default=str), status_code=status,
                        media_type="application/json", headers=dict(headers or {}))

    def failed(request: Request, err: RoastError) -> Response:
        status, doc = refusal_document(err)
        note(request, code=err.code)
        headers = {"www-authenticate": 'Bearer realm="roast"'} if status == 401 else {}
        if status == 503:
            headers["retry-after"] = "1"
        return as_json(doc, status, headers)

    def note(request: Request, **fields: Any) -> None:
        request.scope.setdefault("roast.log", {}).update(fields)

    async def read_body(request: Request, limit: int) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise RequestRefused("too_large", f"the request body is larger than {limit} bytes; nothing was delivered",
                             hint="ROAST_MAX_EVENT_BYTES sets the limit")
        from starlette.requests import ClientDisconnect

        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestRefused("too_large", f"the request body is larger than {limit} bytes; nothing "
                                                      "was delivered", hint="ROAST_MAX_EVENT_BYTES sets the limit")
                chunks.append(chunk)
        except ClientDisconnect:  # an aborted upload: a 400 and one log line, never a traceback (issue 21)
            raise RequestRefused("bad_request", "the client closed the connection before the body was complete; "
                                                "nothing was delivered") from None
        return b"".join(chunks)

    async def post_event(request: Request, **target: Any) -> Response:
        event = request.path_params["event"]
        note(request, event=event, session=target.get("session_id"))
        try:
            if request.headers.get("roast-signature") is not None:  # issue 23: the signature is the credential
                return await signed_approval(request, event, target)
            # judged on its head before a byte of its body is read (issue 21): a token, or the
            # headers a signature needs; the raw bytes are verified before anything parses them
            signed = serve_intake.signed(request.headers)
            if signed:
                serve_intake.check_signed_head(config, request.headers, time.time())
            else:
                who = authenticate(config, request.headers, None, time.time(), client=_client(request))
            body = await read_body(request, settings.max_event_bytes())
            if signed:
                who = authenticate(config, request.headers, body, time.time(), client=_client(request))
            note(request, actor=who.actor, event_id=who.event_id)
            kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
            if body and not (kind == "application/json" or kind.endswith("+json")):
                raise RequestRefused("unsupported_media_type", f"the body must be JSON (Content-Type: "
                                 f"application/json), not {kind!r}; nothing was delivered")
            reason = request.headers.get("roast-reason") or request.query_params.get("reason") or None
            result = await claim(deliver, api, event, body, who, reason=reason and reason[:2000], together=True,
                                 route=target.get("session_id") or target.get("workflow"), **target)
        except RoastError as err:
            if isinstance(err, EventLate) and err.claimed:  # its timeout path was claimed, and runs here
                runtime.submit(err.session_id)
            return failed(request, err)
        note(request, session=result.session_id, outcome=result.outcome)
        if result.outcome == "consumed":
            runtime.submit(result.session_id)
        return as_json(result.to_json())

    async def signed_approval(request: Request, event: str, target: dict[str, Any]) -> Response:
        """An SSH-signed approval (`Roast-Signature`, issue 23) needs no other credential: checked on
        the raw body's data, and delivered once, as the signer."""
        if target.get("session_id") is None:
            raise RequestRefused("usage", "a signed approval names its session: POST it to "
                                          "/v1/sessions/{id}/events/{event}; nothing was delivered")
        text, signature = approvals.read_header(request.headers["roast-signature"])
        body = await read_body(request, settings.max_event_bytes())
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if body and not (kind == "application/json" or kind.endswith("+json")):
            raise RequestRefused("unsupported_media_type", f"the body must be JSON, not {kind!r}; nothing was delivered")
        checked = await call(approvals.check_signed, target["session_id"], event, body, text, signature,
                             store=api.store, pool="verify")  # ssh-keygen runs here, not in a claim or read thread
        result = await claim(approvals.deliver_checked, checked, store=api.store, run=False, together=True,
                             route=target["session_id"])
        note(request, actor=(result.delivery or {}).get("actor"), session=result.session_id, outcome=result.outcome)
        if result.outcome == "consumed":
            runtime.submit(result.session_id)
        return as_json(result.to_json())

    async def by_session(request: Request) -> Response:
        return await post_event(request, session_id=request.path_params["session_id"])

    async def by_key(request: Request) -> Response:
        key = request.query_params.get("key")
        if not key:
            return failed(request, RequestRefused("usage", "deliver by correlation key with ?key=K"))
        return await post_event(request, workflow=request.path_params["name"], key=key)

    async def list_sessions(request: Request) -> Response:
        from roast.views import session_json

        q = request.query_params
        try:
            who = authenticate(config, request.headers, None, time.time(), client=_client(request))
            note(request, actor=who.actor)
            statuses = [s for v in q.getlist("status") for s in v.split(",") if s]
            capped: dict[str, str] = {}
            limit = serve_intake.query_number(q, "limit", 50, 10_000)
            offset = serve_intake.query_number(q, "offset", 0, 2**31 - 1)
            # issue 25: `?workflow=` (a path, a `name:` or a directory) is an indexed range too
            page = await call(api.list_sessions, status=statuses, limit=limit, offset=offset, open_first=True,
                              workflow=q.get("workflow"))
            rows, total = page.rows, min(page.total, COUNT_CAP)  # issue 25: x-total-capped says so
            if page.capped:
                capped = {"x-total-capped": "true"}
        except RoastError as err:
            return failed(request, err)
        return as_json([session_json(s) for s in rows], headers={"x-total-count": str(total), **capped})

    async def one_session(request: Request) -> Response:
        try:
            who = authenticate(config, request.headers, None, time.time(), client=_client(request))
            note(request, actor=who.actor, session=request.path_params["session_id"])

            def read() -> dict[str, Any]:
                s = api.session(request.path_params["session_id"])
                from roast.views import session_document

                from roast.gates import page, pages

                return session_document(s, api.history(s.id), api.deliveries(s.id), api.links(s),
                                        page(s, store=api.store), pages(s, store=api.store))

            return as_json(await call(read))
        except RoastError as err:
            return failed(request, err)

    async def health(request: Request) -> Response:
        try:
            await call(api.list_sessions, limit=1)
        except RoastError as err:
            return as_json({"ok": False, "error": {"code": err.code, "message": err.message}}, 503)
        return as_json({"ok": True, "workers": config.workers, "busy": len(runtime.running),
                        "queued": runtime.queued()})

    async def not_found(request: Request, exc: HTTPException) -> Response:
        status = exc.status_code
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "error")
        if request.url.path.startswith("/v1/"):
            return as_json({"error": {"code": code, "message": f"{request.method} {request.url.path}: "
                                                               f"{exc.detail}"}}, status)
        return Response(f"{exc.detail}\n", status_code=status, media_type="text/plain")

    routes = [Route("/healthz", health, methods=["GET"]),
              Route("/v1/sessions", list_sessions, methods=["GET"]),
              Route("/v1/sessions/{session_id}", one_session, methods=["GET"]),
              Route("/v1/sessions/{session_id}/events/{event}", by_session, methods=["POST"]),
              Route("/v1/workflows/{name}/events/{event}", by_key, methods=["POST"]),
              *routes_for_people(config, runtime, api, {
                  "call": call, "claim": claim, "note": note, "failed": failed, "read_body": read_body,
                  "as_json": as_json, "authenticate": authenticate})]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})  # type: ignore[dict-item]
    return _Front(app, config, log, closing=claims.close, starting=claims.start)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


class _Front:
    """Plain ASGI middleware: the Host and Origin checks a loopback server needs against DNS
    rebinding and cross-site posts from a browser, the headers every answer carries, and the
    request's log line (the path only; an approval link's token is never logged)."""

    def __init__(self, app: Any, config: Config, log: Log, closing: Callable[[], None] | None = None,
                 starting: Callable[[], None] | None = None) -> None:
        self.app, self.config, self.log, self.closing, self.starting = app, config, log, closing, starting
        self.hosts = None if not loopback(config.host) else _LOOPBACK_NAMES | (
            {config.public_host} if config.public_host else set())

    def start(self) -> None:
        """Before the first request: start what the app runs beside it (the claim process)."""
        if self.starting is not None:
            self.starting()

    def close(self) -> None:
        """After the last request: stop what the app started (the claim thread)."""
        if self.closing is not None:
            self.closing()

    def _refuse(self, status: int, code: str, message: str) -> tuple[int, bytes]:
        return status, json.dumps({"error": {"code": code, "message": message}}).encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from urllib.parse import urlsplit

        began = time.perf_counter()
        host_header, origin = "", None
        for key, value in scope.get("headers", []):  # ASGI: lowercased names; the last of a repeat wins
            if key == b"host":
                host_header = value.decode("latin-1")
            elif key == b"origin":
                origin = value.decode("latin-1")
        path = scope.get("path", "")
        shown = path[:3] + "<link>" if path.startswith(("/a/", "/g/", "/p/")) else path  # a capability: never logged
        refusal = None
        host = urlsplit("//" + host_header).hostname or ""
        if self.hosts is not None and host.lower() not in self.hosts:
            refusal = self._refuse(421, "misdirected", f"this server does not answer for the host {host!r}")
        if refusal is None and origin is not None and path.startswith("/v1/") \
                and urlsplit(origin).netloc.lower() != host_header.lower():
            refusal = self._refuse(403, "cross_origin", "the roast API does not answer requests from web pages "
                                                        "of other origins")
        status_seen = [0]

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_seen[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"),
                    (b"referrer-policy", b"no-referrer")]
            await send(message)

        scope["roast.log"] = {}
        try:
            if refusal is not None:
                status, body = refusal
                await sending({"type": "http.response.start", "status": status,
                               "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
            else:
                await self.app(scope, receive, sending)
        finally:
            fields = scope.get("roast.log", {})
            self.log(f"{scope.get('method')} {shown} {status_seen[0]}",
                     ms=round((time.perf_counter() - began) * 1000, 1), **fields)


# --------------------------------------------------------------------------- running


def _serve(config: Config) -> int:
    import signal
    import socket
    import threading

    import uvicorn

    from roast import api, http_guard
    from roast.display import Log, LogObserver
    from roast.serve_claims import Bound

    log = Log(config.log_format)
    try:
        guarded = http_guard.protocol(os.environ)  # header/body deadlines, a per-address cap (issue 21)
        api.list_sessions(limit=1)  # the store is reachable, or say so now (exit 4)
    except RoastError as err:
        print(f"roast: error: {err}", file=sys.stderr)
        return err.exit_code
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio sets TCP_NODELAY on IPPROTO_TCP only
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host.strip("[]"), config.port))
        sock.listen(2048)
    except OSError as err:
        sock.close()
        print(f"roast: error: cannot listen on {config.host}:{config.port}: {err.strerror or err}", file=sys.stderr)
        return 2
    store = api.open_store()
    runtime = api.worker(workers=config.workers, log=log, store=store,
                         observer_for=lambda session_id: LogObserver(log, session_id))
    app = build_app(config, runtime, Bound(store), log)
    app.start()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           proxy_headers=False, server_header=False, timeout_keep_alive=5,
                                           timeout_graceful_shutdown=10, limit_concurrency=1024, http=guarded))
    stop, hurry = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        (hurry if stop.is_set() else stop).set()

    saved = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    # uvicorn runs on its own thread, so the signals stay ours (it installs handlers only on the main thread)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="roast-serve-http", daemon=True)
    try:
        runtime.start()
        thread.start()
        bound = sock.getsockname()
        where = f"[{bound[0]}]" if family == socket.AF_INET6 else bound[0]
        log(f"listening on http://{where}:{bound[1]}", workers=config.workers,
            auth="on" if config.authenticated else "off (loopback only)")
        while not stop.wait(0.5):
            if not thread.is_alive():
                log("the HTTP server stopped on its own")
                break
        log("stopping: no new requests; running branches may finish", grace=config.grace)
        server.should_exit = True
        thread.join(timeout=30)
        app.close()
        runtime.stop(config.grace, hurry)
    except (KeyboardInterrupt, Interrupted):  # a signal before ours were installed, or a second Ctrl-C
        server.should_exit = True
        thread.join(timeout=30)
        runtime.stop(0.0, hurry)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        sock.close()
    log("stopped")
    return 0
