#!/usr/bin/env python3
"""Writes the values table of helm/strata/README.md from values.yaml: every key with a `# --` comment, its default
and that comment. `check_chart.py` fails when the README's table differs from what this writes.

    python3 helm/strata/ci/gen_readme.py            # rewrite the table in README.md
"""

import json
import pathlib
import re

import yaml

CHART = pathlib.Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- values:begin -->", "<!-- values:end -->"


def described_keys():
    """(dotted path, description) of every key preceded by a `# --` comment, in file order."""
    stack, pending, found = [], None, []
    for line in (CHART / "values.yaml").read_text().splitlines():
        comment = re.match(r"^\s*# ?(.*)$", line)
        if comment:
            text = comment.group(1)
            if text.startswith("-- "):
                pending = text[3:]
            elif pending is not None:
                pending += " " + text.strip()
            continue
        key = re.match(r"^(\s*)([A-Za-z0-9_]+):", line)
        if not key:
            continue
        indent = len(key.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key.group(2)))
        if pending is not None:
            found.append((".".join(k for _, k in stack), pending))
            pending = None
    return found


def default(values, path):
    value = values
    for part in path.split("."):
        value = value[part]
    text = json.dumps(value, ensure_ascii=False)
    return "see values.yaml" if len(text) > 60 else f"`{text}`"


def table():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = ["| key | default | description |", "|---|---|---|"]
    for path, description in described_keys():
        escaped = description.replace("|", "\\|")
        rows.append(f"| `{path}` | {default(values, path)} | {escaped} |")
    return "\n".join(rows) + "\n"


def write():
    readme = (CHART / "README.md").read_text()
    begin, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    (CHART / "README.md").write_text(readme[:begin] + "\n" + table() + readme[end:])


if __name__ == "__main__":
    write()
