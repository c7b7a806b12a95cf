"""The documentation site (mkdocs.yml, docs/) and the README: short README whose links
resolve, every page two clicks from the home page, the output contract's table equal to the
code's, and the generated reference pages naming every command, option and setting.
(`make test` also builds the site with `mkdocs build --strict`: broken links and anchors.)"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import posixpath
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.fixture(scope="module")
def gen():
    """docs/gen_reference.py, the MkDocs hook that generates the reference pages."""
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def links(page: Path) -> list[str]:
    """Relative link targets of a Markdown page, without their anchors (code blocks
    skipped)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [target.split("#", 1)[0] for target in LINK.findall(text)
            if not target.startswith(("http://", "https://", "#", "mailto:"))]


def nav_pages(nav: list) -> list[str]:
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_readme_is_short_and_its_links_resolve():
    readme = REPO / "README.md"
    text = readme.read_text()
    assert len(text.splitlines()) <= 200
    assert "make demo   #" in text and "make test   #" in text  # the quick start
    targets = links(readme)
    assert any(t.startswith("docs/") for t in targets)
    for target in targets:
        assert (REPO / target).exists(), f"README links to a missing {target}"


def test_every_page_is_two_clicks_from_home(gen):
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    pages = set(nav_pages(config["nav"]))
    generated = set(gen.PAGES)
    for page in pages - generated:
        assert (DOCS / page).exists(), f"mkdocs.yml names a missing page {page}"

    def targets(page: str) -> set[str]:
        if page in generated or not page.endswith(".md"):
            return set()
        base = posixpath.dirname(page)
        return {posixpath.normpath(posixpath.join(base, t)) for t in links(DOCS / page)}

    one = targets("index.md")
    two = set().union(*(targets(p) for p in one))
    unreachable = pages - {"index.md"} - one - two
    assert not unreachable, f"more than two clicks from the home page: {sorted(unreachable)}"


def test_the_output_contract_page_lists_the_codes_tag_columns():
    from tagging.schema import OUTPUT_FIELDS  # the output contract

    text = (DOCS / "search" / "output-contract.md").read_text()
    section = text.split("## The tag columns", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, flags=re.M)
    assert [name for name, _ in rows] == [f.name for f in OUTPUT_FIELDS]
    aliases = {"float": "float32"}  # pyarrow's name for float32

    def base(kind: str) -> str:
        name = re.split(r"[<\[]", kind.strip())[0]
        return aliases.get(name, name)

    for (name, documented), field in zip(rows, OUTPUT_FIELDS, strict=True):
        assert base(documented) == base(str(field.type)), name
        if "UTC" in str(field.type):
            assert "UTC" in documented, name


def test_the_cli_page_names_every_command_and_option(gen):
    page = gen.render_cli()
    todo = [(["tagging"], gen.cli_parser())]
    while todo:
        path, parser = todo.pop()
        assert f"## {' '.join(path)}" in page or path == ["tagging"]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [([*path, name], sub) for name, sub in action.choices.items()]
            elif not isinstance(action, argparse._HelpAction):
                for option in action.option_strings:
                    assert option in page, f"{' '.join(path)} {option}"


def test_the_settings_page_names_every_variable_and_field(gen):
    from tagging import settings

    page = gen.render_settings()
    for name, value in vars(settings).items():
        if name.endswith("_ENV"):
            assert f"`{value}`" in page
            assert f"`{value}` | read where" not in page, f"{value}: no settings field reads it"
    for spec in gen.SETTINGS_CLASSES:
        for field in dataclasses.fields(gen.load(spec)):
            assert f"| `{field.name}` |" in page


def test_the_review_api_page_has_every_operation(gen):
    _, spec = gen.review_app_and_schema()
    page = gen.render_review_api()
    for path, methods in spec["paths"].items():
        for method in methods:
            assert f"## {method.upper()} {path}" in page


def test_the_modules_page_lists_every_module_in_its_layer(gen):
    page = gen.render_modules()
    for top in gen.CODE_TOPS:
        for path in (REPO / top).rglob("*.py"):
            if path.name != "__main__.py":
                assert f"| `{path.relative_to(REPO)}` |" in page, path
    storage = page.index("`tagging/storage/roots.py`")
    assert page.index("## `ground`") < storage < page.index("## `encoder` · `photos`")
