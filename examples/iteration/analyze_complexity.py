"""Measure the file just read (the original asked a model): functions, branches, long lines."""
import re


def run(ctx):
    source = ctx.output["read_file"]
    lines = source.splitlines()
    issues = []
    for number, line in enumerate(lines, 1):
        if len(line) > 79:
            issues.append({"line": number, "kind": "style", "severity": 1,
                           "text": f"line {number} is {len(line)} characters long"})
        depth = (len(line) - len(line.lstrip(" "))) // 4
        if depth >= 4 and re.match(r"\s*(if|for|while)\b", line):
            issues.append({"line": number, "kind": "complexity", "severity": 3,
                           "text": f"line {number} is nested {depth} levels deep"})
    functions = len(re.findall(r"^\s*def ", source, re.MULTILINE))
    branches = len(re.findall(r"^\s*(if|elif|for|while|except)\b", source, re.MULTILINE))
    return {"file": ctx.loop["current_file"], "functions": functions, "branches": branches,
            "issues": issues}
