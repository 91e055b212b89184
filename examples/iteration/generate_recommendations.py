"""Turn the analysis of the current file into recommendations, most severe first."""


def run(ctx):
    analysis = ctx.output["analyze_complexity"]
    name = analysis["file"].rsplit("/", 1)[-1]
    recommendations = [
        {"file": name, "severity": issue["severity"],
         "issue": f"{name}: {issue['text']} ({issue['kind']})"}
        for issue in sorted(analysis["issues"], key=lambda i: -i["severity"])
    ]
    return {"file": name, "functions": analysis["functions"], "recommendations": recommendations}
