"""Name the language of the current target from its extension (the original asked a model)."""

LANGUAGES = {".rb": "ruby", ".js": "javascript", ".py": "python", ".go": "go"}


def run(ctx):
    target = ctx.workflow.target or ""
    for ext, language in LANGUAGES.items():
        if target.endswith(ext):
            return language
    return "unknown"
