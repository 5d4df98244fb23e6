"""docs/conformance.md, the map from OCTT conformance cases to tests, stays true.

The page is a Markdown table per feature profile, one row per case: `| TC_xxx | what the charge
point must do | tests/<file>.py::<test> ... or "not implemented yet: ..." |`. A test claims a case
by its name (`test_tc_037_2_...`, `test_tc_037_2_and_3_...` for two cases) or by a
`@pytest.mark.tc("TC_084")` marker. The tests are found by reading the source (ast), not by
collecting them, so a broken test module does not hide a claim.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import attrs

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "conformance.md"
TESTS = REPO / "tests"

CASE_ID = re.compile(r"TC_\d{3}(?:_\d+)?")
# test_tc_003_..., test_tc_046_1_..., test_tc_037_2_and_3_... (TC_037_2 and TC_037_3).
NAMED_CASES = re.compile(r"test_tc_(?P<case>\d{3})(?P<variant>_\d+)?(?P<more>(?:_and_\d+)*)")
NODE_ID = re.compile(r"`(?P<file>tests/[\w/]+\.py)::(?P<test>\w+)`")
NOT_IMPLEMENTED = "not implemented yet"


@attrs.frozen
class Claim:
    case: str
    file: str  # relative to the repository, as the page writes it
    test: str


def defined_tests(path: Path) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
            "test_"
        ):
            yield node


def marked_cases(function: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[str]:
    """The arguments of `@pytest.mark.tc(...)`."""
    for decorator in function.decorator_list:
        if isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "pytest.mark.tc":
            for arg in decorator.args:
                assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), (
                    f"{function.name}: tc marker arguments must be case ids as literal strings"
                )
                yield arg.value


def named_cases(name: str) -> Iterator[str]:
    match = NAMED_CASES.match(name)
    if match is None:
        return
    base = f"TC_{match['case']}"
    yield base + (match["variant"] or "")
    for variant in re.findall(r"_and_(\d+)", match["more"]):
        yield f"{base}_{variant}"


def claims() -> list[Claim]:
    found = []
    for path in sorted(TESTS.glob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        for function in defined_tests(path):
            cases = {*named_cases(function.name), *marked_cases(function)}
            found += [Claim(case, relative, function.name) for case in sorted(cases)]
    return found


def page_rows() -> dict[str, str]:
    """Case id -> the row's last cell (what covers it)."""
    rows: dict[str, str] = {}
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| TC_"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        case, covered = cells[0], cells[-1]
        assert CASE_ID.fullmatch(case), f"not a case id: {case!r} in {line!r}"
        assert case not in rows, f"{case} has two rows"
        rows[case] = covered
    return rows


def page_row_for(case: str, rows: dict[str, str]) -> str | None:
    """A test of a variant (TC_046_1) belongs to the case's row when the page lists the case as
    one (TC_046)."""
    if case in rows:
        return case
    base = re.sub(r"_\d+$", "", case)
    return base if base != case and base in rows else None


def test_cases_are_parsed_from_test_names_and_markers() -> None:
    assert list(named_cases("test_tc_003_plug_in_first")) == ["TC_003"]
    assert list(named_cases("test_tc_046_1_reserved_connector_local_start")) == ["TC_046_1"]
    assert list(named_cases("test_tc_037_2_and_3_offline_start")) == ["TC_037_2", "TC_037_3"]
    assert list(named_cases("test_clear_cache_accepted")) == []
    source = '@pytest.mark.tc("TC_084")\n@pytest.mark.slow\ndef test_x() -> None: ...\n'
    (function,) = [
        node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef)
    ]
    assert list(marked_cases(function)) == ["TC_084"]


def test_every_case_a_test_claims_is_on_the_page_with_that_test() -> None:
    rows = page_rows()
    every = claims()
    assert len(every) > 100  # the scan sees the suite, not an empty folder
    missing = []
    for claim in every:
        row = page_row_for(claim.case, rows)
        node = f"`{claim.file}::{claim.test}`"
        if row is None:
            missing.append(f"{claim.case}: no row on the page (claimed by {node})")
        elif node not in rows[row]:
            missing.append(f"{row}: the row does not name {node}")
    assert missing == [], "docs/conformance.md is behind the tests:\n" + "\n".join(missing)


def test_every_test_the_page_names_exists() -> None:
    defined: dict[str, set[str]] = {}
    gone = []
    for match in NODE_ID.finditer(PAGE.read_text(encoding="utf-8")):
        path = REPO / match["file"]
        if not path.is_file():
            gone.append(f"{match['file']}: no such file")
            continue
        if match["file"] not in defined:
            defined[match["file"]] = {function.name for function in defined_tests(path)}
        if match["test"] not in defined[match["file"]]:
            gone.append(f"{match['file']}::{match['test']}: no such test")
    assert defined, "the page names no test"
    assert gone == [], "docs/conformance.md names tests that do not exist:\n" + "\n".join(gone)


def test_every_case_row_names_its_tests_or_says_it_is_not_implemented() -> None:
    rows = page_rows()
    assert len(rows) > 90
    unclear = [
        case
        for case, covered in rows.items()
        if not NODE_ID.search(covered) and not covered.startswith(NOT_IMPLEMENTED)
    ]
    assert unclear == [], f"rows that name no test and do not say {NOT_IMPLEMENTED!r}: {unclear}"


def test_the_readme_links_the_page() -> None:
    assert "(docs/conformance.md)" in (REPO / "README.md").read_text(encoding="utf-8")


def test_nothing_cites_the_reference_material_beside_the_repository() -> None:
    """The authors keep reference material in a folder beside the repository; a clone has
    nothing there, so no file of the project may point at it."""
    outside = re.compile(rb"\.\./shared\b")
    files = [REPO / "README.md"]
    for folder in ("dcocpp", "tests", "bench", "docs", "configs", "statecharts", ".ci"):
        files += [
            path
            for path in (REPO / folder).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        ]
    citing = [
        path.relative_to(REPO).as_posix() for path in files if outside.search(path.read_bytes())
    ]
    assert citing == []
