"""The findings report (Markdown + self-contained HTML) and the plot / report commands."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest

from ncrobust.analysis import Study, Thresholds, write_report
from ncrobust.cli import main


def test_report_lists_findings_thresholds_and_figures(finding_runs: Path, tmp_path: Path) -> None:
    path = write_report([finding_runs], tmp_path / "out", figures=("fig7",))
    assert path == tmp_path / "out" / "report.md"
    text = path.read_text()
    rows = [line for line in text.splitlines() if re.match(r"\| (1|2|3|4|5a|5b|6) \|", line)]
    assert len(rows) == 9 and all(re.search(r"\| holds \([23]/3 seeds\) \|$", r) for r in rows)
    # the headline number with its interval over seeds, its criterion next to it
    (row1,) = [line for line in rows if line.startswith("| 1 |")]
    assert (
        "| NC1 pgd / clean = 100 (95 % CI 100–100) | >= 10 (st_pgd_nc1_ratio) (+2 more) |" in row1
    )
    # the details: every criterion, each seed's verdict, the numbers read
    details = text.split("## Finding details")[1].split("## Thresholds")[0]
    assert "- criterion: NC1 pgd / (C-1) >= 1 (st_pgd_nc1_per_class): 1.667" in details
    assert "- per seed: inconclusive, holds, holds" in details
    assert "| st_pgd_nc1_ratio | 10 |" in text and "`--st-pgd-nc1-ratio`" in text
    assert "![fig7](figures/fig7.png)" in text
    assert (tmp_path / "out" / "figures" / "fig7.png").is_file()
    assert "fig2" not in text  # only the requested figure
    # a contents list whose links lead to the sections
    contents = text.split("Contents:")[1].split("## Runs")[0]
    assert "- [Findings](#findings)" in contents and "- [Thresholds](#thresholds)" in contents
    page = (tmp_path / "out" / "report.html").read_text()
    assert "data:image/png;base64," in page
    assert not re.search(r"src=['\"](?!data:)", page)  # nothing outside the file
    assert page.count('class="holds"') == 23  # the appendix findings need runs at several eps
    assert page.count("<details><summary>details</summary>") == 25  # one per finding
    for anchor in re.findall(r"<a href='#([a-z-]+)'>", page):
        assert f"id='{anchor}'" in page, anchor
    assert "<code>--st-pgd-nc1-ratio</code>" in page
    assert "<code>ncrobust measure --eps</code>" in page and "`" not in page.split("<body>")[1]
    # each default's source in the paper is shown with it
    assert (
        "| st_pgd_nc1_ratio | 10 | finding 1: ST NC1 pgd / NC1 clean, at least | Sec. 3.1" in text
    )
    assert "| not measured (pgd measured at fewer than 2 eps" in text


def test_report_lists_groups_in_one_order(finding_runs: Path, tmp_path: Path) -> None:
    """ST, AT, TRADES in the runs table and in every finding's rows, whatever the load order."""
    text = write_report([finding_runs], tmp_path, figures=()).read_text()
    runs = text.split("## Runs")[1].split("## Findings")[0]
    groups = [line.split(" | ")[0][2:] for line in runs.splitlines() if line.startswith("| ")]
    assert groups[1:] == ["ST", "AT", "TRADES"]
    (row5a_st, row5a_at) = [r for r in text.splitlines() if r.startswith("| 5a |")]
    assert "| ST (3 seeds) |" in row5a_st and "| AT (3 seeds) |" in row5a_at


def test_report_threshold_changes_the_verdict(finding_study: Study, tmp_path: Path) -> None:
    path = write_report(finding_study, tmp_path, Thresholds(st_pgd_nc1_ratio=1000.0), figures=())
    text = path.read_text()
    (row,) = [line for line in text.splitlines() if line.startswith("| 1 |")]
    assert row.endswith("| does not hold (0/3 seeds) |") and ">= 1000" in row
    assert "| st_pgd_nc1_ratio | 1000 |" in text
    assert not (tmp_path / "figures").exists()


def test_not_measured_findings_and_skipped_figures_say_why(
    fake: ModuleType, tmp_path: Path
) -> None:
    metrics, _ = fake.paper_rows("st", 2, layerwise=False, views={"train": ("clean",)})
    run = fake.write_run(tmp_path / "st", "st", 2, metrics=metrics, stats=[])
    text = write_report([run], tmp_path / "out", figures=("fig2", "fig7")).read_text()
    assert "| 3 |" in text and "not measured (no AT run)" in text
    assert "fig7 not drawn: no attack statistics" in text
    assert "![fig2](figures/fig2.png)" in text


def test_report_command_flags_and_output(
    finding_runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rep"
    code = main(
        [
            "report",
            str(finding_runs),
            "--out",
            str(out),
            "--figures",
            "none",
            "--trades-nc1-ratio",
            "50",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "findings: 22 holds, 1 does not hold, 0 inconclusive, 2 not measured" in printed
    (row,) = [r for r in (out / "report.md").read_text().splitlines() if r.startswith("| 4 |")]
    assert row.endswith("| does not hold (0/3 seeds) |")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plot", "{missing}"], "no such directory"),
        (["plot", "{empty}"], "not a run directory"),
        (["plot", "{runs}", "--figures", "fig2,fig99"], "unknown figure(s) fig99"),
        (["plot", "{runs}", "--formats", "png,bmp"], "unknown figure format(s) bmp"),
        (["report", "{empty}"], "not a run directory"),
        (["report", "{runs}", "--figures", "fig5"], "unknown figure(s) fig5"),
        (["report", "{runs}", "--at-nc1-drop", "nan"], "at_nc1_drop must be a finite number"),
        (["plot", "{runs}", "--where", "colour=red"], "unknown key 'colour'"),
        (["report", "{runs}", "--where", "dataset"], "'dataset' is not KEY=VALUE"),
        (["report", "{runs}", "--where", "dataset=cifar100"], "no run matches dataset=cifar100"),
        (["plot", "{runs}", "--metrics", "cdnv"], "metric(s) cdnv not recorded"),
    ],
)
def test_commands_refuse_bad_input_with_exit_2(
    paper_runs: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    (tmp_path / "empty").mkdir()
    places = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "runs": paper_runs}
    args = [a.format(**places) for a in argv] + ["--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before drawing anything


def test_plot_command_writes_the_requested_formats(
    paper_runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "figs"
    code = main(
        [
            "plot",
            str(paper_runs),
            "--out",
            str(out),
            "--figures",
            "fig7,fig16",
            "--formats",
            "png,pdf",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["fig7.pdf", "fig7.png"]
    captured = capsys.readouterr()
    assert "skipped fig16: no small-eps study" in captured.err
    # nothing requested has data: exit 1 with a message, not an empty figure
    assert main(["plot", str(paper_runs), "--out", str(out), "--figures", "fig15"]) == 1
    assert "no requested figure has data" in capsys.readouterr().err


def test_report_answers_the_trades_frozen_bn_question(fake: ModuleType, tmp_path: Path) -> None:
    fake.write_run(tmp_path / "runs" / "at", "at", 2)
    for frozen, nc1 in ((True, 2.0), (False, 0.6)):
        over = {("train", "clean", "penultimate", "nc1"): nc1}
        metrics, stats = fake.paper_rows("trades", 2, overrides=over)
        name = "trades_frozen" if frozen else "trades"
        fake.write_run(tmp_path / "runs" / name, "trades", 2, metrics, stats, trades_bn_eval=frozen)
    text = write_report([tmp_path / "runs"], tmp_path / "out", figures=()).read_text()
    section = text.split("## TRADES: frozen BN vs original")[1].split("## Thresholds")[0]
    rows = [r for r in section.splitlines() if r.startswith("| TRADES")]
    assert len(rows) == 2
    (frozen,) = [r for r in rows if r.startswith("| TRADES (frozen BN, as released) |")]
    assert "NC1 clean TRADES / AT = 6.667" in frozen
    assert frozen.endswith("| holds (1 seed, no interval) |")
    (original,) = [r for r in rows if r.startswith("| TRADES | TRADES (1 seed) vs AT (1 seed) |")]
    assert "NC1 clean TRADES / AT = 2;" in original
    assert original.endswith("| does not hold (1 seed, no interval) |")
    # one variant alone: no comparison section
    alone = write_report(
        [tmp_path / "runs" / "at", tmp_path / "runs" / "trades"], tmp_path / "o2", figures=()
    )
    assert "## TRADES: frozen BN vs original" not in alone.read_text()


def test_report_where_selects_runs(fake: ModuleType, tmp_path: Path) -> None:
    fake.write_run(tmp_path / "runs" / "st", "st", 1)
    fake.write_run(tmp_path / "runs" / "at", "at", 1)
    out = tmp_path / "rep"
    args = ["report", str(tmp_path / "runs"), "--where", "mode=at", "--figures", "none"]
    assert main([*args, "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "| AT | at |" in text and "| ST |" not in text
    assert "| 1 |" in text and "not measured (no ST run)" in text


def test_robustness_rows_follow_the_group_order(fake: ModuleType, tmp_path: Path) -> None:
    from ncrobust.runs.directory import RunDirectory
    from ncrobust.runs.tables import robustness_frame
    from ncrobust.study.report import build_report

    def row(attack: str, eps: float, metric: str, value: float) -> dict[str, object]:
        return {"epoch": 10, "split": "test", "attack": attack, "norm": "linf", "eps": eps,
                "metric": metric, "value": value}  # fmt: skip

    for name, mode in (("a_trades", "trades"), ("b_st", "st")):  # loaded TRADES first
        path = fake.write_run(tmp_path / "runs" / name, mode, 2)
        frame = robustness_frame(
            [row("clean", 0.0, "accuracy", 0.9), row("autoattack", 8 / 255, "accuracy", 0.3)]
        )
        frame.to_parquet(RunDirectory(path).robustness_path, index=False)
    study = Study.from_paths([tmp_path / "runs"])
    assert [g.mode for g in study.groups] == ["trades", "st"]
    report = build_report(study, tmp_path / "out", Thresholds(), figures=())
    assert report.robustness is not None
    assert [r.group for r in report.robustness.rows] == ["ST", "TRADES"]


def test_markdown_cells_are_inert_whatever_a_run_is_named() -> None:
    from ncrobust.study.report import _md_table

    name = "<img src=x onerror=alert(1)>[x](javascript:alert(1))|extra"
    table = _md_table(["run", "n"], [[name, "1"]])
    row = table.splitlines()[-1]
    assert "<img" not in row and "](" not in row and "&lt;img" in row
    assert row.count(" | ") == 1  # the pipe in the name does not open a cell
