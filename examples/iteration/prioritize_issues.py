"""Merge every file's recommendations into one list, most severe first (stable by file)."""


def run(ctx):
    issues = [rec for analysis in ctx.output["analyses"] for rec in analysis["recommendations"]]
    issues.sort(key=lambda rec: -rec["severity"])
    return {"total": len(issues), "issues": [rec["issue"] for rec in issues]}
