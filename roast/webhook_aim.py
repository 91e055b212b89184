"""Who may aim a notify webhook (issue 21): a `webhook:` URL built from event data would let
whoever sends the event choose where the next wait's approval links go, and approve their own
request. `aimed_by_event` finds the `{{ }}` expressions of a URL template that read the event;
the compiler refuses such a URL (`roast validate`, and before any session runs). A URL that
reads anything else at run time (a step's output, a loop's item, the target) gets the wait's
details without its approval links (`author_written`): only a URL the workflow's author or the
operator (`env.*`) wrote receives them.

Pure: no I/O; imports only `expressions`.
"""
from __future__ import annotations

import re

from roast.expressions import TEMPLATE

_EVENT = re.compile(r"(?<![\w.])(event|delivery)\b")  # the event's data, and its sender's actor and reason


def aimed_by_event(url: str) -> list[str]:
    """The `{{ expr }}` pieces of a webhook URL template that read `event` (its data) or `delivery`
    (its actor and reason): what the sender of an event chose."""
    return [m.group(0) for m in TEMPLATE.finditer(url) if _EVENT.search(m.group(0)[2:-2])]


def aimed_problem(url: str, where: str) -> str | None:
    """The compiler's problem text for a webhook URL the event sender could aim, or None."""
    found = aimed_by_event(url)
    if not found:
        return None
    return (f"{where}: the webhook URL is built from event data ({', '.join(found)}), so whoever sends the event "
            "chooses where this wait's approval links go; write the URL in the workflow, or take it from env.*")


_TRUSTED = re.compile(r"\s*(env|workflow)\s*(\.\s*[A-Za-z_]\w*|\[\s*('[^']*'|\"[^\"]*\")\s*\])+\s*")


def author_written(url: str) -> bool:
    """Whether every `{{ expr }}` of a webhook URL template reads only `env.*` or `workflow.*`: then
    the author or the operator chose where it points, and the payload may carry approval links."""
    return all(_TRUSTED.fullmatch(m.group(1)) for m in TEMPLATE.finditer(url))


def links_allowed(template: str, url: str, allowed_hosts: str | None) -> bool:
    """Whether a notify webhook's payload may carry approval links: its URL template was written by
    the author or the operator (`author_written`), or the URL it rendered to points at one of
    `allowed_hosts` (`ROAST_NOTIFY_ALLOWED_HOSTS`: host names, separated by spaces or commas)."""
    if author_written(template):
        return True
    from urllib.parse import urlsplit

    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return False
    return bool(host) and host in {h.lower() for h in re.split(r"[\s,]+", allowed_hosts or "") if h}
