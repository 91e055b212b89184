"""Count the fixes applied so far (the original asked a model to keep count)."""


def run(ctx):
    before = ctx.output.get("update_fix_count", {}).get("fixes_applied", 0)
    applied = 0 if ctx.output["select_next_issue"]["no_issues_left"] else 1
    return {"fixes_applied": before + applied}
