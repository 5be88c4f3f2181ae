"""`parallax report` / `parallax compare` on the command line."""

from pathlib import Path

from typer.testing import CliRunner

from controllers.cli.app import app
from tests.fake_run import make_run


def test_report_and_compare_commands(tmp_path: Path) -> None:
    run = make_run(tmp_path / "demo-1")
    r = CliRunner().invoke(app, ["report", str(run)])
    assert r.exit_code == 0, r.output
    assert (run / "report.html").exists()
    out = tmp_path / "cmp.html"
    r = CliRunner().invoke(app, ["compare", str(run), str(run), "--out", str(out)])
    assert r.exit_code == 0 and out.exists()


def test_report_of_a_wrong_folder_exits_2_with_a_message(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert r.exit_code == 2
    assert "no such run folder" in r.output and "Traceback" not in r.output
