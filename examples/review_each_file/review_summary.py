"""Count the decisions collected by `reviews` (one line per file)."""


def run(ctx):
    reviews = ctx.output["reviews"]
    approved = [line for line in reviews if " approved by " in line]
    blocked = [line for line in reviews if line not in approved]
    verdict = "ready to merge" if not blocked else "not ready to merge"
    lines = [f"{len(approved)} of {len(reviews)} files approved: {verdict}"]
    lines += [f"- {line}" for line in reviews]
    return "\n".join(lines)
