"""The pages people use on `roast serve` (issues 15, 22): a wait's page (`/g/{token}`, every event its
own button with its schema's form), an event link's page (`/a/{token}`, that one event), and the
inbox (`/inbox`, `/v1/inbox`). The HTML comes from `roast.pages` through `roast.gates`; this module
only routes: GET never delivers (link scanners and chat unfurlers fetch links), a POST must carry
the page's CSRF token, and its form is turned into typed data and delivered through `api.resume`
like every other channel. No session id (beyond an 8-character reference), step path, file path
or command appears in a page.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping

from roast.errors import RoastError
from roast.views import HTTP_STATUS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from starlette.requests import Request
    from starlette.responses import Response

FORM_LIMIT = 65_536  # bytes of an approval form


def routes(config: Any, runtime: Any, api: Any, h: Mapping[str, Callable[..., Any]]) -> list[Any]:
    """The page routes of `roast serve`; `h` holds its helpers (`call`, `claim`, `note`, `failed`,
    `read_body`, `as_json`, `authenticate`)."""
    from urllib.parse import parse_qs

    from roast import gates  # only when `roast serve` runs: the CLI imports serve for its parser (start-up)
    from starlette.responses import Response
    from starlette.routing import Route

    call, claim, note, failed, read_body, as_json, authenticate = (
        h["call"], h["claim"], h["note"], h["failed"], h["read_body"], h["as_json"], h["authenticate"])

    def page(html_text: str, status: int = 200) -> Response:
        return Response(html_text, status_code=status, media_type="text/html; charset=utf-8",
                        headers={"content-security-policy": gates.csp(html_text), "x-frame-options": "DENY"})

    def refused(err: RoastError, status: int = 403) -> Response:
        return page(gates.notice_page("This link cannot be used", err.message), status)

    def identity(request: Request) -> tuple[str, bool]:
        """Who posted a page's form: a trusted proxy's identity header (verified), else `link`."""
        try:
            who = authenticate(config, request.headers, None, time.time(), client=_client(request),
                               proxy_only=True)
        except RoastError:
            return "link", False
        return (who.actor, True) if who is not None else ("link", False)

    def handler(kind: str) -> Callable[..., Any]:
        async def serve_page(request: Request) -> Response:
            token = request.path_params["token"]

            def opened() -> tuple[Any, Any, str]:
                if kind == "p":  # a personal link (issue 23)
                    return gates.open_person(token, store=api.store)
                return api.check_link(token) if kind == "a" else gates.open_page(token, store=api.store)

            def show(errors: Mapping[str, str] | None = None, values: Any = None, status: int = 200) -> Response:
                try:
                    link = opened()
                except RoastError as err:
                    note(request, code=err.code)
                    return _ended_or_refused(err)
                note(request, session=link[1].id)
                if kind == "p" and gates.changed(link[0], link[1]):
                    return page(gates.changed_page(), 409)
                only = link[0].event if kind == "a" else None
                return page(gates.render(token, action_url=token, errors=errors, values=values, only=only,
                                         link=link, store=api.store), status)

            def _ended_or_refused(err: RoastError) -> Response:
                try:  # an authentic link past its expiry may still say how its wait ended (it delivers nothing)
                    if kind == "a":
                        link = api.check_link(token, now=lambda: 0.0)
                    elif kind == "p":
                        link = gates.open_person(token, store=api.store, now=0.0)
                    else:
                        link = gates.open_page(token, store=api.store, now=0.0)
                except RoastError:
                    return refused(err)
                if link[1].status == "waiting" and link[1].wait_seq == link[0].wait_seq:
                    return refused(err)
                return page(gates.render(token, action_url=token, only=link[0].event, link=link, store=api.store),
                            403)

            if request.method in ("GET", "HEAD"):
                return await call(show)  # GET never delivers
            try:
                await call(opened)  # the link before its form is read (issue 21)
            except RoastError as err:
                note(request, code=err.code)
                return await call(_ended_or_refused, err)
            try:
                raw = await read_body(request, FORM_LIMIT)
            except RoastError as err:
                return failed(request, err)
            actor, verified = identity(request)

            def submit() -> Response:
                try:
                    link, session, csrf = opened()
                except RoastError as err:
                    note(request, code=err.code)
                    return _ended_or_refused(err)
                try:
                    form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=200)
                except ValueError:  # more fields than a form has: a 400, never a traceback (issue 21)
                    note(request, code="bad_request")
                    return page(gates.notice_page("This form is not valid", "It has more fields than this page's "
                                                  "form; nothing was changed."), 400)
                given = (form.get("_csrf") or [""])[0]
                if not hmac.compare_digest(given.encode(), csrf.encode()):
                    note(request, code="bad_csrf")
                    return page(gates.notice_page("This form is not valid", "It did not come from this page; "
                                                  "nothing was changed. Open the link again."), 403)
                if kind == "p":  # issue 23: the person the link names, verified by possession, once per event
                    event = (form.get("_event") or [""])[0]
                    note(request, session=session.id, actor=link.identity)
                    prior = gates.already(link, event, api.deliveries(session.id))
                    if prior is not None:
                        note(request, code="duplicate")
                        return page(gates.already_page(prior, session), 409)
                    if gates.changed(link, session):
                        note(request, code="changed")
                        return page(gates.changed_page(), 409)
                    return person_submit(link, session, form, event)
                note(request, session=session.id, actor=actor)
                if session.status != "waiting" or session.wait_seq != link.wait_seq:
                    return show(status=409)  # it says how the wait ended
                # one event id per link, person, event and data: a second click is a duplicate, never a second
                # delivery; another person's click is their own approval (issue 23: a quorum on one page)
                said = json.dumps(sorted((k, v) for k, v in form.items() if k != "_csrf"))
                event_id = "page-" + hashlib.sha256(f"{token}\x00{actor}\x00{said}".encode()).hexdigest()[:32]
                try:
                    result, errors = gates.decide(session, link.wait_seq, form, actor=actor, verified=verified,
                                                  event_id=event_id, only=link.event, store=api.store)
                except RoastError as err:
                    note(request, code=err.code)
                    return show({"": f"{err.message}"}, form, HTTP_STATUS.get(err.code, 409))
                if result is None:
                    return show(errors, form, 422)
                return delivered(result)

            def person_submit(link: Any, session: Any, form: Any, event: str) -> Response:
                if session.status != "waiting" or session.wait_seq != link.wait_seq:
                    return show(status=409)  # it says how the wait ended
                event_id = gates.person_event_id(link.session_id, link.wait_seq, link.identity, event)
                try:
                    result, errors = gates.decide(session, link.wait_seq, form, actor=link.identity, verified=True,
                                                  event_id=event_id, store=api.store)
                except RoastError as err:
                    note(request, code=err.code)
                    prior = gates.already(link, event, api.deliveries(session.id))  # a racing second click
                    if prior is not None:
                        return page(gates.already_page(prior, session), 409)
                    return show({"": f"{err.message}"}, form, HTTP_STATUS.get(err.code, 409))
                if result is None:
                    return show(errors, form, 422)
                if result.outcome == "duplicate":
                    prior = gates.already(link, event, api.deliveries(session.id))
                    if prior is not None:
                        return page(gates.already_page(prior, session), 409)
                return delivered(result)

            def delivered(result: Any) -> Response:
                note(request, event=result.event, outcome=result.outcome)
                if result.outcome == "consumed":
                    runtime.submit(result.session_id)
                # Post/Redirect/Get, relative to the page, so a path prefix behind a proxy is kept
                return Response(status_code=303, headers={"location": token})

            return await claim(submit)

        return serve_page

    async def inbox(request: Request) -> Response:
        html = request.url.path == "/inbox"
        try:
            who = authenticate(config, request.headers, None, time.time(), client=_client(request))
        except RoastError as err:
            if html:
                return Response(gates.notice_page("Sign in needed", err.message), status_code=401,
                                media_type="text/html; charset=utf-8",
                                headers={"www-authenticate": 'Bearer realm="roast"'})
            return failed(request, err)
        note(request, actor=who.actor)
        listed = await call(gates.inbox, store=api.store)
        if not html:
            return as_json([{k: v for k, v in g.items() if k != "deadline_at"} for g in listed])
        return page(gates.inbox_page(listed, who=who.actor if config.authenticated else None))

    return [Route("/a/{token}", handler("a"), methods=["GET", "POST"]),
            Route("/g/{token}", handler("g"), methods=["GET", "POST"]),
            Route("/p/{token}", handler("p"), methods=["GET", "POST"]),
            Route("/inbox", inbox, methods=["GET"]),
            Route("/v1/inbox", inbox, methods=["GET"])]


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None
