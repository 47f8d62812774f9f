"""The repository's own documents stay true to the code they describe."""

from __future__ import annotations

import re

from dia.config import PRESETS
from dia.sections import SECTIONS, resolve
from tests.conftest import ROOT


def documented_keys(table: str) -> set[tuple[str, str]]:
    """(section, key) of every option named in a markdown table's first column: the first name
    is ``section.key``, the ones after it keys of the same section."""
    found = set()
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        names = re.findall(r"`([a-z_.]+)`", line.split("|")[1])
        section = names[0].split(".")[0]
        found |= {(section, name.split(".")[-1]) for name in names}
    return found


def test_documented_keys_reads_the_first_column() -> None:
    table = "| option | a |\n|---|---|\n| `dissolve.t_min`..`t_max` | `x.y` |\n"
    assert documented_keys(table) == {("dissolve", "t_min"), ("dissolve", "t_max")}


def test_every_difference_between_the_presets_is_in_the_paper_vs_code_table() -> None:
    doc = (ROOT / "docs" / "paper-vs-code.md").read_text()
    differences = {
        (section, field)
        for section in SECTIONS
        for field, value in resolve(section, "dia_code", []).to_dict().items()
        if resolve(section, "dia_paper", []).to_dict()[field] != value
    }
    assert differences, sorted(PRESETS)
    assert differences <= documented_keys(doc), differences - documented_keys(doc)


def test_links_between_the_documents_resolve() -> None:
    for doc in [ROOT / "README.md", ROOT / "config" / "README.md", *ROOT.glob("docs/*.md")]:
        for target in re.findall(r"\]\(([^)#:]+\.md)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"
