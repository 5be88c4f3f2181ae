"""The report in headless Chromium: it loads, every figure renders, no console errors."""

from pathlib import Path

import pytest

from controllers.browser_check import check_page
from controllers.report import render_report
from tests.fake_run import make_run

pytestmark = pytest.mark.integration


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    page = render_report(make_run(tmp_path / "run"))
    check = check_page(page)
    assert check.ok, check
    assert check.images == 5


def test_check_catches_a_broken_figure_and_a_script_error(tmp_path: Path) -> None:
    page = render_report(make_run(tmp_path / "run"))
    page.write_text(page.read_text().replace("cost_terms.png", "missing.png")
                    .replace("</body>", "<script>notDefined()</script></body>"))
    check = check_page(page)
    assert check.broken == ["missing.png"]
    assert any("notDefined" in e for e in check.console_errors)
