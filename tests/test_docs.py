"""The documentation keeps its promises: references between files point where they say."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEMO_README = ROOT / "demo" / "README.md"


def demo_step(number: str) -> str:
    """The text of step ``number`` of the compose walk-through (``## N. ...`` up to the next heading)."""
    text = DEMO_README.read_text(encoding="utf-8")
    found = re.search(rf"^## {number}\. .*?(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert found, f"demo/README.md has no step {number}"
    return found.group(0)


def test_the_demo_policy_points_to_the_step_that_creates_its_producer() -> None:
    # It used to say "step 2" (watching the product appear); the product is created, with this namespace, in step 1.
    policy_file = ROOT / "demo" / "tokenize-policy.yaml"
    text = policy_file.read_text(encoding="utf-8")
    steps = re.findall(r"demo/README\.md, step (\d+)", text)
    assert steps, "the policy's comment names the walk-through step where its producer is created"
    producers = {entry["producer"] for entry in yaml.safe_load(text)["policies"]}
    for number in steps:
        step = demo_step(number)
        assert re.search(r"\bcreate\b", step, re.IGNORECASE), f"step {number} creates nothing"
        for producer in producers:
            assert f"`{producer}`" in step, f"step {number} does not create the producer {producer}"


# ----------------------------------------------------------------------------------------- README and docs/

README = ROOT / "README.md"
PAGES = [README, ROOT / "CONTRIBUTING.md", ROOT / "demo" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def outside_code(text: str) -> str:
    """``text`` without fenced code blocks (their "#" lines are comments, not headings; their links are code)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file: lower case, punctuation dropped, spaces as hyphens."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", outside_code(path.read_text(encoding="utf-8")), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def test_every_relative_link_of_the_docs_points_to_a_file_and_heading_that_exist() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", outside_code(page.read_text(encoding="utf-8"))):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file_part, _, anchor = target.partition("#")
            resolved = (page.parent / file_part).resolve() if file_part else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_the_readme_is_a_front_door_in_the_order_issue_15_asks_for() -> None:
    text = README.read_text(encoding="utf-8")
    sections = re.findall(r"^## (.+)$", outside_code(text), re.MULTILINE)
    assert sections == [
        "See it work: `make demo`",
        "Two commands",
        "Connecting a portal",
        "Commands",
        "Documentation",
    ]
    assert len(text.splitlines()) < 200, "reference belongs in docs/"
    # The two setup commands stay exactly these.
    assert "make run     # the service on embedded defaults" in text
    assert "make test    # ruff, import contracts and the whole test suite: exactly what CI runs (.ci/run)" in text
    # Both webhook generations, with their portal settings, and the command table.
    for needle in ("WEBHOOK_URL=", "WEBHOOK_V2_URL", "webhooks/portal/v2", "| `provisioner serve [--no-worker]` |"):
        assert needle in text, needle
    # The configuration reference moved to docs/configuration.md (tests/test_settings.py checks it there).
    assert "settings:begin" not in text


def test_every_doc_page_is_linked_from_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in text, f"docs/{page.name} is not linked from the README"
