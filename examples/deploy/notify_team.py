"""Tell the team what happened to the release (offline: the message is the step's output).

A real workflow would post to chat here; this one only returns the text, so the example
runs anywhere and writes nothing.
"""


def run(ctx):
    outcome = ctx.event_name or "timeout"
    if outcome == "approved":
        who = ctx.event.get("approver", "someone")
        return f"Team notified: {ctx.output['deploy']} - thanks, {who}."
    return f"Team notified: {ctx.output['rollback']}."
