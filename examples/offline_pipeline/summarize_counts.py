"""Summarise the per-file lines collected by `line_counts` ("NAME has N lines of KIND")."""
import re


def run(ctx):
    counts = {}
    kinds = {}
    for line in ctx.output["line_counts"]:
        match = re.match(r"(?P<name>.+) has (?P<n>\d+) lines of (?P<kind>\w+)", line)
        counts[match["name"]] = int(match["n"])
        kinds[match["kind"]] = kinds.get(match["kind"], 0) + 1
    largest = max(counts, key=counts.get)
    return {
        "files": len(counts),
        "total_lines": sum(counts.values()),
        "largest": largest,
        "by_kind": kinds,
    }
