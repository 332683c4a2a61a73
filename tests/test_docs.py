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
