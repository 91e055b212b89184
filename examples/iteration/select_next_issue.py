"""Pick the next issue to fix: the first one not fixed yet, or say that none are left."""


def run(ctx):
    fixed = int(ctx.output.get("update_fix_count", {}).get("fixes_applied", ctx.output["initialize_fixes"]))
    issues = ctx.output["prioritize_issues"]["issues"]
    if fixed >= len(issues):
        return {"no_issues_left": True}
    return {"no_issues_left": False, "issue": issues[fixed]}
