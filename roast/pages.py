"""The gate page a person sees (issue 22): one HTML page per wait, its forms from the events' JSON
Schemas, the posted form turned back into typed event data, and the deadline in words.

Pure: no I/O, no clock (`now` is passed in), no store. `serve` builds a `Gate` from the session and
calls `render_gate`; a POST goes through `parse_form`, whose verdict is `roast.schema`'s, the same
check every other channel uses. Everything user-supplied is escaped with `html.escape`. The page has
no script and no external asset: its one inline `<style>` is allowed by hash (`csp_header`).
"""
from __future__ import annotations

from html import escape

from roast import schema as schema_mod
from roast.record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    Form = Mapping[str, Sequence[str]]

# The page's own form controls; `unsupported` refuses schema properties with these names.
CSRF_FIELD, EVENT_FIELD, REASON_FIELD = "_csrf", "_event", "_reason"
RESERVED = (CSRF_FIELD, EVENT_FIELD, REASON_FIELD)
_SIMPLE = ("string", "integer", "number", "boolean")
_COMPOSITE = ("oneOf", "anyOf", "allOf", "not", "if", "$ref", "$dynamicRef", "dependentSchemas",
              "patternProperties", "dependentRequired", "propertyNames", "unevaluatedProperties")
_HINT = ("a page offers text, numbers, true/false and choices; deliver this event through the API "
         "(roast resume --data, POST /v1/…/events) or flatten the schema")


class GateEvent(Record):
    """One button of a gate: the event `name`, its `label` (from `labels:`, else the name), the
    event's JSON Schema (None: no data), and whether it is the gate's primary action."""
    __slots__ = ("name", "label", "schema", "primary")
    _defaults = {"label": None, "schema": None, "primary": False}


class Decision(Record):
    """How a gate ended: the event taken (its label), by whom (`actor`, `verified`), when (epoch),
    why (`reason`), and what became of the session (`outcome`: completed/failed/running/waiting/
    cancelled/timed_out, with `outcome_reason` in plain words)."""
    __slots__ = ("event", "label", "actor", "verified", "at", "reason", "outcome", "outcome_reason")
    _defaults = {"label": None, "actor": None, "verified": False, "at": None, "reason": None,
                 "outcome": None, "outcome_reason": None}


class Gate(Record):
    """What one wait shows a person. `status` is "open" or "decided" (then `decision` says how);
    `ref` is any identifier of the session: only its first 8 characters are shown, in the footer;
    `person`: whom a personal link answers as (issue 23), None on a shared page."""
    __slots__ = ("title", "events", "description", "workflow", "workflow_description", "deadline",
                 "status", "decision", "progress", "ref", "person")
    _defaults = {"description": None, "workflow": None, "workflow_description": None, "deadline": None,
                 "status": "open", "decision": None, "progress": None, "ref": None, "person": None}


class Field(Record):
    """One form control from one schema property: `kind` is text/email/date/number/checkbox/radio/
    select; `choices` the enum values; `step`/`minimum`/`maximum` for numbers; `default` prefills."""
    __slots__ = ("name", "kind", "label", "required", "help", "default", "choices", "pattern",
                 "min_length", "max_length", "minimum", "maximum", "step", "type")
    _defaults = {"required": False, "help": None, "default": None, "choices": (), "pattern": None,
                 "min_length": None, "max_length": None, "minimum": None, "maximum": None, "step": None,
                 "type": "string"}


# --------------------------------------------------------------------------- fields from a schema

def _humanise(name: str) -> str:
    words = name.replace("_", " ").replace("-", " ").strip()
    return (words[:1].upper() + words[1:]) if words else name


def _type(prop: Mapping[str, Any]) -> str | None:
    """The one JSON type a property takes (a `["string", "null"]` counts as "string")."""
    kind = prop.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        return kinds[0] if len(kinds) == 1 else None
    if kind is None and "enum" not in prop and "const" not in prop:
        return "string"
    return kind if isinstance(kind, str) else None


def _properties(schema: Any) -> Mapping[str, Any]:
    props = schema.get("properties") if isinstance(schema, dict) else None
    return props if isinstance(props, dict) else {}


def form_fields(schema: Any) -> list[Field]:
    """The form controls of an event's schema, in the order of its `properties` (what `unsupported`
    lists is left out)."""
    required = set(schema.get("required") or ()) if isinstance(schema, dict) else set()
    fields = []
    for name, prop in _properties(schema).items():
        if not isinstance(prop, dict) or _problem(name, prop):
            continue
        kind, common = _type(prop), {
            "label": str(prop.get("title") or _humanise(name)), "required": name in required,
            "help": prop.get("description"), "default": prop.get("default")}
        choices = prop.get("enum") if "enum" in prop else ([prop["const"]] if "const" in prop else None)
        if choices is not None and kind != "boolean":
            fields.append(Field(name, "radio" if len(choices) <= 4 else "select", choices=tuple(choices),
                                type=kind or "string", **common))
        elif kind == "boolean":
            # a checkbox is always sent (absent is false); only `const: true` makes it one to tick
            must = prop.get("const") is True or prop.get("enum") == [True]
            fields.append(Field(name, "checkbox", type="boolean", **{**common, "required": must}))
        elif kind in ("integer", "number"):
            low = prop.get("minimum", prop.get("exclusiveMinimum"))
            high = prop.get("maximum", prop.get("exclusiveMaximum"))
            fields.append(Field(name, "number", minimum=low, maximum=high, type=kind,
                                step="1" if kind == "integer" else "any", **common))
        else:
            fmt = prop.get("format")
            fields.append(Field(name, fmt if fmt in ("email", "date") else "text", pattern=prop.get("pattern"),
                                min_length=prop.get("minLength"), max_length=prop.get("maxLength"), **common))
    return fields


def _problem(name: str, prop: Any) -> str | None:
    if name in RESERVED:
        return f"the name {name!r} is the page's own; rename the property"
    if not isinstance(prop, dict):
        return "a boolean schema cannot be shown as a field"
    tricky = [k for k in _COMPOSITE if k in prop]
    if tricky:
        return f"`{tricky[0]}` cannot be expressed by a form field"
    kind = _type(prop)
    if kind in ("object", "array"):
        return f"a nested {'object' if kind == 'object' else 'list (array)'} cannot be filled in on a page"
    if kind is None and "enum" not in prop and "const" not in prop:
        return f"a value of several types ({prop.get('type')!r}) cannot be filled in on a page"
    if kind is not None and kind not in _SIMPLE and kind != "null":
        return f"the type {kind!r} cannot be filled in on a page"
    return None


def unsupported(schema: Any) -> list[str]:
    """What in an event's schema a page form cannot express, one line each with a hint (for
    `roast validate` to refuse link use); empty when the whole schema fits a form."""
    if schema is None or schema is True or schema == {}:
        return []
    if not isinstance(schema, dict):
        return [f"the schema {schema!r} accepts nothing a form can send (hint: {_HINT})"]
    found = []
    if schema.get("type", "object") != "object":
        found.append(f"the event data must be a {schema.get('type')!r}, and a page sends an object")
    found += [f"`{key}` at the top of the schema cannot be expressed by a form" for key in _COMPOSITE
              if key in schema]
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        found.append("`additionalProperties` with a schema cannot be expressed by a form")
    props = _properties(schema)
    for name, prop in props.items():
        problem = _problem(str(name), prop)
        if problem:
            found.append(f"property {name!r}: {problem}")
    for name in schema.get("required") or ():
        if name not in props:
            found.append(f"property {name!r} is required but not described under `properties`")
    return [f"{line} (hint: {_HINT})" for line in found]


# --------------------------------------------------------------------------- the posted form

def _first(form: Form, name: str) -> str | None:
    values = form.get(name)
    if values is None:
        return None
    if isinstance(values, str):
        return values
    return values[0] if values else None


def _number(text: str, kind: str) -> int | float:
    text = text.strip()
    try:
        value = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise ValueError("must be a whole number" if kind == "integer" else "must be a number") from None
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be a number")
        if kind == "integer":
            if not value.is_integer():
                raise ValueError("must be a whole number")
            return int(value)
    return value


def _convert(field: Field, text: str | None) -> object:
    """The typed value of one posted control; `_OMIT` when it sends nothing."""
    if field.kind == "checkbox":
        return text is not None and text != "false"
    if text is None or text == "":
        return _OMIT
    if field.choices:
        for choice in field.choices:
            if text == _choice_value(choice):
                return choice
        return text
    if field.kind == "number":
        return _number(text, field.type)
    return text


_OMIT = object()


def _choice_value(choice: object) -> str:
    if choice is True or choice is False:
        return "true" if choice else "false"
    return "" if choice is None else str(choice)


def _words(values: Sequence[object]) -> str:
    return ", ".join(_choice_value(v) if v is not None else "none" for v in values)


def _plain(prop: Mapping[str, Any], value: object) -> str:
    """The first rule of one property that `value` breaks, in plain words (or a general phrase)."""
    kind = _type(prop)
    if kind == "integer" and not (isinstance(value, int) and not isinstance(value, bool)):
        return "must be a whole number"
    if kind == "number" and not (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return "must be a number"
    if "enum" in prop and value not in prop["enum"]:
        return f"must be one of: {_words(prop['enum'])}"
    if "const" in prop and value != prop["const"]:
        return "must be ticked" if prop["const"] is True else f"must be {_words([prop['const']])}"
    if isinstance(value, str):
        low, high = prop.get("minLength"), prop.get("maxLength")
        if isinstance(low, int) and len(value) < low:
            return f"must be at least {low} character{'s' if low != 1 else ''}"
        if isinstance(high, int) and len(value) > high:
            return f"must be at most {high} character{'s' if high != 1 else ''}"
        if "pattern" in prop:
            return f"is not in the expected form (it must match {prop['pattern']})"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, words, broken in (("minimum", "at least", float.__lt__), ("maximum", "at most", float.__gt__),
                                   ("exclusiveMinimum", "more than", float.__le__),
                                   ("exclusiveMaximum", "less than", float.__ge__)):
            bound = prop.get(key)
            if isinstance(bound, (int, float)) and broken(float(value), float(bound)):
                return f"must be {words} {bound}"
        if "multipleOf" in prop:
            return f"must be a multiple of {prop['multipleOf']}"
    return "is not an accepted value"


def parse_form(schema: Any, form: Form) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The posted form as the event's typed JSON object, checked by `roast.schema` (the check every
    channel uses): `(data, {})`, or `(None, {field: message})` with messages in plain words. A
    message that belongs to no one field is under the key "". Unknown form names are ignored."""
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    fields = form_fields(schema)
    for field in fields:
        try:
            value = _convert(field, _first(form, field.name))
        except ValueError as err:
            errors[field.name] = str(err)
            continue
        if value is not _OMIT:
            data[field.name] = value
    found = [] if schema is None else schema_mod.problems(data, schema)
    if not errors and not found:
        return data, {}
    props = _properties(schema)
    for field in fields:
        if field.name in errors:
            continue
        if field.name not in data:
            if field.required:
                errors[field.name] = "is required"
        elif schema_mod.problems(data[field.name], props[field.name]):
            errors[field.name] = _plain(props[field.name], data[field.name])
    if not errors:  # a rule about the whole object (additionalProperties, a required name, …)
        errors[""] = "; ".join(line.split(" (rule `")[0].removeprefix("$: ") for line in found)
    return None, errors


# --------------------------------------------------------------------------- time in words

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _clock(ts: float, now: float, *, always_date: bool = False) -> str:
    """"16:00 UTC" on the same UTC day as `now`, else "Tue 9 Dec 16:00 UTC" (with the year when it
    differs)."""
    import time

    at, today = time.gmtime(ts), time.gmtime(now)
    hm = f"{at.tm_hour:02d}:{at.tm_min:02d} UTC"
    if not always_date and (at.tm_year, at.tm_yday) == (today.tm_year, today.tm_yday):
        return hm
    year = f" {at.tm_year}" if at.tm_year != today.tm_year else ""
    return f"{_DAYS[at.tm_wday]} {at.tm_mday} {_MONTHS[at.tm_mon - 1]}{year} {hm}"


def _span(seconds: float) -> str:
    minutes = int(seconds // 60)
    days, hours, mins = minutes // 1440, minutes // 60 % 24, minutes % 60
    if days >= 2:
        return f"{days} days"
    if days == 1:
        return "1 day" + (f" {hours} h" if hours else "")
    if hours:
        return f"{hours} h" + (f" {mins} min" if mins else "")
    return f"{mins} min" if mins else "less than a minute"


def deadline_words(deadline: float, now: float) -> str:
    """"in 1 h 52 min, 16:00 UTC", "in 3 days, Tue 9 Dec 16:00 UTC", "overdue since 15:10 UTC"."""
    if deadline <= now:
        return f"overdue since {_clock(deadline, now)}"
    return f"in {_span(deadline - now)}, {_clock(deadline, now)}"


def when_words(ts: float, now: float) -> str:
    """A past moment: "today 14:02 UTC" or "Tue 9 Dec 14:02 UTC"."""
    clock = _clock(ts, now)
    return f"today {clock}" if clock[0].isdigit() else clock


# --------------------------------------------------------------------------- the page

STYLE = (
    "*{box-sizing:border-box}"
    "body{margin:0;background:#f3f4f6;color:#1f2328;"
    "font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}"
    ".page{max-width:40rem;margin:0 auto;padding:1.5rem 1rem 2.5rem}"
    ".card{background:#fff;border:1px solid #d0d7de;border-radius:12px;padding:1.25rem;margin:1rem 0}"
    ".top{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;justify-content:space-between}"
    ".kicker{margin:0;color:#57606a;font-size:.9rem}"
    ".pill{display:inline-flex;align-items:center;gap:.45rem;padding:.2rem .75rem;border:1px solid;"
    "border-radius:999px;font-size:.875rem;font-weight:600}"
    ".pill::before{content:'';width:.6rem;height:.6rem;border-radius:50%;background:currentColor}"
    ".open{background:#fff8e1;color:#6d4c00;border-color:#e5c46b}"
    ".good{background:#e8f5ec;color:#1a5d2e;border-color:#8fcca1}"
    ".bad{background:#fdecee;color:#8e1b27;border-color:#eda4ad}"
    ".neutral{background:#eef1f4;color:#3d4650;border-color:#c3cad2}"
    "h1{font-size:1.5rem;line-height:1.25;margin:.75rem 0 .25rem}"
    "h2{font-size:1.1rem;margin:0 0 .75rem}"
    ".desc{white-space:pre-line;margin:.5rem 0 0}"
    ".facts{display:grid;grid-template-columns:max-content 1fr;gap:.35rem 1rem;margin:1rem 0 0}"
    ".facts dt{color:#57606a}.facts dd{margin:0}"
    ".field{margin:0 0 1rem;border:0;padding:0;min-width:0}"
    "label,legend{display:block;font-weight:600;margin-bottom:.3rem;padding:0}"
    ".req{font-weight:600;font-size:.8rem;color:#8e1b27;margin-left:.4rem}"
    ".opt{font-weight:400;color:#57606a}"
    "input[type=text],input[type=email],input[type=date],input[type=number],select,textarea{width:100%;"
    "font:inherit;padding:.55rem .7rem;border:1px solid #6e7781;border-radius:8px;background:#fff;color:inherit}"
    "textarea{min-height:4.5rem;resize:vertical}"
    ".help{margin:.25rem 0 0;color:#57606a;font-size:.9rem}"
    ".err{margin:.35rem 0 0;color:#b3261e;font-weight:600;font-size:.9rem}"
    "input[aria-invalid=true],select[aria-invalid=true]{border:2px solid #b3261e}"
    ".alert{background:#fdecee;border:1px solid #eda4ad;border-radius:8px;padding:.6rem .8rem;margin:0 0 1rem}"
    ".choice{display:flex;gap:.55rem;align-items:center;font-weight:400;margin:.3rem 0}"
    ".check{display:flex;gap:.6rem;align-items:flex-start}.check label{margin:0}"
    "input[type=radio],input[type=checkbox]{width:1.2rem;height:1.2rem;margin:.15rem 0 0;flex:none;"
    "accent-color:#0b5cad}"
    ".actions{display:flex;flex-wrap:wrap;gap:.75rem;margin-top:1.25rem}"
    "button{font:inherit;font-weight:600;padding:.6rem 1.4rem;min-height:2.75rem;border-radius:8px;"
    "border:2px solid #0b5cad;cursor:pointer}"
    ".primary{background:#0b5cad;color:#fff}.primary:hover{background:#084a8f;border-color:#084a8f}"
    ".secondary{background:#fff;color:#1f2328;border-color:#6e7781}.secondary:hover{background:#f3f4f6}"
    ":focus-visible{outline:3px solid #1a73e8;outline-offset:2px}"
    ".result p{margin:.35rem 0}.result h2{margin-bottom:.5rem}"
    ".result.good{border-left:6px solid #2e7d46}.result.bad{border-left:6px solid #b3261e}"
    ".result.neutral{border-left:6px solid #6e7781}"
    ".result{background:#fff;color:#1f2328;border-color:#d0d7de}"
    "footer{color:#57606a;font-size:.85rem;margin-top:1.5rem;text-align:center}"
    "@media (max-width:32rem){.page{padding-top:1rem}.actions button{flex:1 1 100%}"
    ".facts{grid-template-columns:1fr;gap:0}.facts dd{margin-bottom:.5rem}h1{font-size:1.35rem}}"
)


def csp_header(html_or_style: str = STYLE) -> str:
    """The Content-Security-Policy for a page: nothing loads, no script runs, forms post only to the
    page's own origin, and the inline `<style>` (each one in `html_or_style`, or the style text
    itself) is allowed by its sha256."""
    import base64
    import hashlib
    import re

    styles = re.findall(r"<style>(.*?)</style>", html_or_style, re.S) or [html_or_style]
    hashes = " ".join("'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
                      for s in styles)
    return (f"default-src 'none'; style-src {hashes}; form-action 'self'; base-uri 'none'; "
            "frame-ancestors 'none'")


def _e(value: object) -> str:
    return escape("" if value is None else str(value))


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _short_ref(ref: str) -> str:
    return ref[:8]


def _attrs(**attrs: object) -> str:
    """HTML attributes, escaped; False/None leave one out, True writes it bare."""
    out = []
    for key, value in attrs.items():
        name = key.rstrip("_").replace("_", "-")
        if value is None or value is False:
            continue
        out.append(f" {name}" if value is True else f' {name}="{_e(value)}"')
    return "".join(out)


def _tag(tag: str, /, **attrs: object) -> str:
    return f"<{tag}{_attrs(**attrs)}>"


def _field_html(field: Field, fid: str, value: str | None, error: str | None) -> str:
    """One control with its label, its required marker, its help and its error."""
    described = " ".join(x for x in (f"{fid}-help" if field.help else "", f"{fid}-err" if error else "") if x)
    marker = "<span class=req>required</span>" if field.required else ""
    label = f"{_e(field.label)}{marker}"
    help_ = f"<p class=help id={fid}-help>{_e(field.help)}</p>" if field.help else ""
    err = f"<p class=err id={fid}-err>{_e(_cap(error))}</p>" if error else ""
    common = {"aria_describedby": described or None, "aria_invalid": "true" if error else None}
    if value is None and field.default is not None:
        value = _choice_value(field.default) if field.kind != "number" else str(field.default)
    if field.kind == "checkbox":
        on = value not in ("", "false") if value is not None else field.default is True
        box = _tag("input", type="checkbox", id=fid, name=field.name, value="true", checked=on,
                   required=field.required, **common)
        return f"<div class='field check'>{box}<div><label for={fid}>{label}</label>{help_}{err}</div></div>"
    if field.kind == "radio":
        options = "".join(
            f"<label class=choice for={fid}-{i}>"
            + _tag("input", type="radio", id=f"{fid}-{i}", name=field.name, value=_choice_value(c),
                   required=field.required, checked=value == _choice_value(c), **common)
            + f"{_e(_choice_value(c) or 'none')}</label>" for i, c in enumerate(field.choices))
        return f"<fieldset class=field><legend>{label}</legend>{help_}{options}{err}</fieldset>"
    if field.kind == "select":
        blank = "" if field.required and value else "<option value=''>Choose…</option>"
        control = (_tag("select", id=fid, name=field.name, required=field.required, **common) + blank
                   + "".join(_tag("option", value=_choice_value(c), selected=value == _choice_value(c))
                             + f"{_e(_choice_value(c) or 'none')}</option>" for c in field.choices) + "</select>")
    elif field.kind == "number":
        control = _tag("input", type="number", id=fid, name=field.name, value=value, step=field.step,
                       min=field.minimum, max=field.maximum, required=field.required,
                       inputmode="numeric" if field.step == "1" else "decimal", **common)
    else:
        control = _tag("input", type=field.kind, id=fid, name=field.name, value=value,
                       pattern=f".*(?:{field.pattern}).*" if field.pattern else None,
                       minlength=field.min_length, maxlength=field.max_length, required=field.required,
                       autocomplete="email" if field.kind == "email" else None, **common)
    return f"<div class=field><label for={fid}>{label}</label>{control}{help_}{err}</div>"


def _reason(fid: str, value: str | None) -> str:
    return (f"<div class=field><label for={fid}>Reason <span class=opt>(optional, shown with your decision)"
            f"</span></label><textarea id={fid} name={REASON_FIELD} maxlength=2000>{_e(value)}</textarea></div>")


def _button(event: GateEvent, *, named: bool) -> str:
    kind = "primary" if event.primary else "secondary"
    extra = _attrs(name=EVENT_FIELD, value=event.name) if named else ""
    return f"<button type=submit class={kind}{extra}>{_e(event.label or event.name)}</button>"


def _forms(gate: Gate, csrf: str, action_url: str, errors: Mapping[str, str], values: Form) -> str:
    """One form with a button per event when no event takes data; else one card per event (whose own
    optional reason box is left out when the event's schema has a `reason` property of its own)."""
    events = sorted(gate.events, key=lambda ev: not ev.primary)
    posted = _first(values, EVENT_FIELD)
    head = (f"<form method=post{_attrs(action=action_url)}>"
            f"<input type=hidden name={CSRF_FIELD}{_attrs(value=csrf)}>")
    general = ""
    if errors:
        count = len([k for k in errors if k])
        said = (f"Please correct the {count} field{'s' if count != 1 else ''} marked below." if count else
                _cap(errors.get("", "")))
        general = f"<p class='err alert' role=alert>Nothing was sent. {_e(said)}</p>"
    by_event = [(ev, form_fields(ev.schema)) for ev in events]
    if not any(fields for _, fields in by_event):
        return (f"<section class=card aria-labelledby=decide><h2 id=decide>Your decision</h2>{head}{general}"
                + _reason("reason", _first(values, REASON_FIELD))
                + "<div class=actions>" + "".join(_button(ev, named=True) for ev, _ in by_event)
                + "</div></form></section>")
    cards = []
    for n, (ev, fields) in enumerate(by_event):
        mine = posted == ev.name
        got = values if mine else {}
        body = "".join(_field_html(f, f"f{n}-{i}", _first(got, f.name), errors.get(f.name) if mine else None)
                       for i, f in enumerate(fields))
        cards.append(f"<section class=card aria-labelledby=h{n}><h2 id=h{n}>{_e(ev.label or ev.name)}</h2>"
                     f"{head}<input type=hidden name={EVENT_FIELD}{_attrs(value=ev.name)}>"
                     + (general if mine else "") + body
                     + ("" if any(f.name == "reason" for f in fields) else
                        _reason(f"f{n}-reason", _first(got, REASON_FIELD)))
                     + f"<div class=actions>{_button(ev, named=False)}</div></form></section>")
    return "".join(cards)


_OUTCOMES = {"completed": "The workflow then finished successfully.",
             "failed": "The workflow then failed",
             "running": "The workflow is carrying on.",
             "waiting": "The workflow is now waiting for another decision.",
             "cancelled": "The workflow was then cancelled",
             "timed_out": "The workflow stopped: nobody decided in time."}


def _label(gate: Gate, decision: Decision) -> str:
    return str(decision.label or next((ev.label for ev in gate.events if ev.name == decision.event and ev.label),
                                      decision.event))


def _tone(gate: Gate) -> str:
    decision = gate.decision
    if decision is None or decision.event == "timeout":
        return "neutral"
    primary = {ev.name for ev in gate.events if ev.primary}
    return "good" if decision.event in primary else "bad"


def _decided(gate: Gate, now: float) -> str:
    d = gate.decision
    tone = _tone(gate)
    if d is None:
        lines = ["<h2>This request is closed</h2>"]
    elif d.event == "timeout":
        lines = ["<h2>Nobody decided in time</h2>",
                 f"<p>The deadline passed{' ' + _e(when_words(d.at, now)) if d.at else ''}.</p>"]
    else:
        label = _label(gate, d)
        who = _e({None: "someone", "": "someone", "link": "someone with the link"}.get(d.actor, d.actor)) + (" <span class=opt>(verified)</span>" if d.verified else "")
        lines = [f"<h2>Decision: {_e(label)}</h2>",
                 f"<p>By {who}" + (f", {_e(when_words(d.at, now))}" if d.at else "") + ".</p>"]
        if d.reason:
            lines.append(f"<p>Reason: “{_e(d.reason)}”</p>")
    if d is not None and d.outcome in _OUTCOMES:
        words = _OUTCOMES[d.outcome]
        if not words.endswith("."):
            words += f": {d.outcome_reason}." if d.outcome_reason else "."
        lines.append(f"<p id=outcome>{_e(words)}</p>")
    return f"<section class='card result {tone}'>{''.join(lines)}</section>"


def _status(gate: Gate, now: float) -> tuple[str, str]:
    if gate.status == "open":
        overdue = gate.deadline is not None and gate.deadline <= now
        return "open", "Overdue: waiting for a decision" if overdue else "Waiting for a decision"
    d = gate.decision
    if d is None:
        return "neutral", "Closed"
    if d.event == "timeout":
        return "neutral", "Timed out"
    return _tone(gate), f"Decided: {_label(gate, d)}"


def render_gate(gate: Gate, *, now: float, csrf: str, action_url: str,
                errors: Mapping[str, str] | None = None, values: Form | None = None) -> str:
    """The whole page of one gate. `values` is the form as posted (it names the event), `errors` what
    `parse_form` said about it: that event's form is shown again with the values and the messages."""
    tone, status = _status(gate, now)
    facts = []
    if gate.status == "open":
        facts.append(("Deadline", deadline_words(gate.deadline, now) if gate.deadline is not None
                      else "none, this waits until someone decides"))
    if gate.progress:
        facts.append(("Progress", gate.progress))
    if gate.person and gate.status == "open":  # issue 23: a personal link answers as its person
        facts.append(("Answering as", f"{gate.person} (this link is yours alone)"))
    if gate.workflow_description:
        facts.append(("About", gate.workflow_description))
    parts = ["<main class=page><header class=top>",
             f"<p class=kicker>{_e(gate.workflow or 'Approval request')}</p>",
             f"<span class='pill {tone}' id=status>{_e(status)}</span></header>",
             f"<h1>{_e(gate.title)}</h1>"]
    if gate.description:
        parts.append(f"<p class=desc>{_e(gate.description)}</p>")
    if facts:
        parts.append("<dl class=facts>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
                     + "</dl>")
    if gate.status == "open":
        parts.append(_forms(gate, csrf, action_url, errors or {}, values or {}))
    else:
        parts.append(_decided(gate, now))
    foot = " · ".join(x for x in ("Opening this page changes nothing: only a button does."
                                  if gate.status == "open" else "",
                                  f"Reference {_e(_short_ref(str(gate.ref)))}" if gate.ref else "") if x)
    parts.append(f"<footer>{foot}</footer></main>")
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            "<meta name=viewport content=\"width=device-width, initial-scale=1\">"
            f"<meta name=referrer content=no-referrer><title>{_e(gate.title)}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")
