"""Say what fixing the file would change (the original let a coding agent edit the file).

Trailing whitespace is removed mechanically; long lines are only reported. The file itself is
left alone, so the example can run on any file without changing it.
"""
from pathlib import Path


def run(ctx):
    lines = Path(ctx.workflow.target).read_text().splitlines()
    trailing = [n for n, line in enumerate(lines, 1) if line != line.rstrip()]
    long_lines = [n for n, line in enumerate(lines, 1) if len(line.rstrip()) > 79]
    if "[Exit status:" not in ctx.output["lint_check"]:
        return "Nothing to fix: the linter found no issues."
    parts = []
    if trailing:
        parts.append(f"would strip trailing whitespace on lines {', '.join(map(str, trailing))}")
    if long_lines:
        parts.append(f"lines {', '.join(map(str, long_lines))} need shortening by hand")
    return "; ".join(parts).capitalize() + "."
