"""Extract a few patterns from the target file as JSON-able data.

The original asked the model for JSON (`json: true`); the offline model only echoes its
prompt, so this step reads the file and counts instead.
"""
import re
from pathlib import Path


def run(ctx):
    text = Path(ctx.workflow.target).read_text()
    classes = re.findall(r"^\s*class\s+(\w+)", text, re.MULTILINE)
    methods = re.findall(r"^\s*(?:def|function)\s+(\w+)", text, re.MULTILINE)
    raises = len(re.findall(r"\b(?:raise|throw)\b", text))
    return {"code_patterns": {"classes": classes, "methods": methods, "method_count": len(methods),
                              "error_handling": {"raise_count": raises}}}
