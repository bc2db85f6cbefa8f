"""Rewrite the side-by-side table of docs/recipes.md from the recipe registry (`petlbench recipes --markdown`).

    .venv/bin/python scripts/update_recipe_docs.py
"""
import os
import subprocess
import sys

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs", "recipes.md")
BEGIN, END = "<!-- recipes:begin -->", "<!-- recipes:end -->"

table = subprocess.run([sys.executable, "-m", "petlbench.cli", "recipes", "--markdown"], capture_output=True,
                       text=True, check=True).stdout.strip()
with open(DOCS, encoding="utf-8") as f:
    text = f.read()
start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
with open(DOCS, "w", encoding="utf-8") as f:
    f.write(text[:start] + "\n" + table + "\n" + text[stop:])
