"""The cross-model summary of measured zoo models: one row per model, rank correlations of each
NC statistic with robust accuracy (bootstrap intervals over models), scatter plots, and the
"model zoo" section stating what holds across defenses (in ``zoo_report.md`` and in the findings
report of ``ncrobust report`` when it is given zoo model directories)."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ncrobust.atomic import atomic_write_bytes, atomic_write_parquet, atomic_write_text
from ncrobust.runs.directory import ZOO_FILE, RunDirectory
from ncrobust.runs.tables import ACCURACY, CLEAN
from ncrobust.views import OUTPUT_LAYER, PENULTIMATE

SUMMARY_FILE = "zoo_summary.parquet"
CORRELATION_FILE = "zoo_correlations.parquet"
FIGURE_FILE = "zoo_correlations.png"
REPORT_FILE = "zoo_report.md"
# the NC statistics correlated with robust accuracy, with their meaning
STATISTICS = {
    "nc1_clean": "NC1 of clean test data (penultimate)",
    "nc1_pgd_over_clean": "NC1 of PGD test data / NC1 of clean",
    "simplex_pgd": "simplex similarity of PGD test class means to the clean simplex",
    "best_early_ncc_pgd": "best NCC accuracy on PGD test data over the early taps",
}
ROBUST = "robust_accuracy"
BOOTSTRAP = 1000


def _value(metrics: pd.DataFrame, view: str, layer: str, metric: str) -> float:
    rows = metrics[
        (metrics.split == "test")
        & (metrics.view == view)
        & (metrics.layer == layer)
        & (metrics.metric == metric)
    ]
    return float(rows.value.iloc[-1]) if len(rows) else math.nan


def _accuracy(robust: pd.DataFrame, attack_prefix: str, clean: bool) -> float:
    rows = robust[(robust.metric == ACCURACY) & (robust.split == "test")]
    rows = rows[(rows.attack.str.startswith(CLEAN)) == clean]
    rows = rows[rows.attack.str.endswith("@zoo") == (attack_prefix == "zoo")]
    return float(rows.value.iloc[-1]) if len(rows) else math.nan


def summary_row(folder: Path) -> dict[str, Any]:
    """One model's row: architecture, extra data, training method as the zoo states it, the NC
    statistics, and the zoo's and the project's own clean/robust accuracy."""
    record = yaml.safe_load((folder / ZOO_FILE).read_text(encoding="utf-8"))
    info = record["zoo"].get("info") or {}
    directory = RunDirectory(folder)
    metrics = directory.read_metrics()
    robust = directory.read_robustness()
    taps = record["architecture"]["taps"]
    early = [_value(metrics, "pgd", tap, "ncc_accuracy") for tap in taps]
    nc1 = _value(metrics, "clean", PENULTIMATE, "nc1")
    row = {
        "model": record["zoo"]["name"],
        "paper": record["zoo"].get("paper"),
        "architecture": info.get("architecture") or record["architecture"]["class"],
        "family": record["architecture"]["family"],
        "extra_data": info.get("additional_data"),
        "training_method": info.get("training_method") or info.get("method"),
        "nc1_clean": nc1,
        "nc1_pgd_over_clean": _value(metrics, "pgd", PENULTIMATE, "nc1") / nc1,
        "simplex_pgd": _value(metrics, "pgd", PENULTIMATE, "simplex_similarity"),
        "best_early_ncc_pgd": max((v for v in early if math.isfinite(v)), default=math.nan),
        "clean_accuracy": _value(metrics, "clean", OUTPUT_LAYER, "accuracy"),
        "own_clean_accuracy": _accuracy(robust, "own", clean=True),
        "own_robust_accuracy": _accuracy(robust, "own", clean=False),
        "zoo_clean_accuracy": _accuracy(robust, "zoo", clean=True),
        "zoo_autoattack_accuracy": _accuracy(robust, "zoo", clean=False),
    }
    zoo = row["zoo_autoattack_accuracy"]
    row[ROBUST] = zoo if math.isfinite(zoo) else row["own_robust_accuracy"]
    row["robust_source"] = "zoo AutoAttack" if math.isfinite(zoo) else "own attack"
    return row


def _ranks(values: np.ndarray) -> np.ndarray:
    return pd.Series(values).rank(method="average").to_numpy()


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either side is constant."""
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def correlations(table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Spearman rank correlation of each NC statistic with robust accuracy over the models, with
    a 95 % percentile bootstrap interval (models resampled with replacement)."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, meaning in STATISTICS.items():
        pair = table[[name, ROBUST]].astype(float).dropna()
        x, y = pair[name].to_numpy(), pair[ROBUST].to_numpy()
        rho = spearman(x, y) if len(pair) >= 3 else math.nan
        low = high = math.nan
        if math.isfinite(rho):
            draws = [spearman(x[i], y[i]) for i in rng.integers(0, len(x), (BOOTSTRAP, len(x)))]
            finite = [d for d in draws if math.isfinite(d)]
            if finite:
                low, high = (float(q) for q in np.percentile(finite, [2.5, 97.5]))
        rows.append({"statistic": name, "meaning": meaning, "models": len(pair),
                     "spearman": rho, "low": low, "high": high})  # fmt: skip
    return pd.DataFrame(rows)


def finding(row: pd.Series) -> str:
    """What the correlation of one statistic says across defenses, in one sentence."""
    if row.models < 3:
        return f"{row.meaning}: {row.models} model(s), too few for a rank correlation."
    if not math.isfinite(row.spearman):
        return f"{row.meaning}: the same for all {row.models} models, no rank correlation."
    text = f"{row.meaning}: Spearman {row.spearman:+.2f} [{row.low:+.2f}, {row.high:+.2f}]"
    if row.low > 0 or row.high < 0:
        sign = "rises" if row.spearman > 0 else "falls"
        return f"{text} over {row.models} models: it {sign} with robust accuracy across defenses."
    return f"{text} over {row.models} models: no consistent trend (the interval includes 0)."


def draw(table: pd.DataFrame, path: Path) -> None:
    """One scatter plot per NC statistic against robust accuracy, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(STATISTICS), figsize=(4 * len(STATISTICS), 3.4))
    for ax, name in zip(np.atleast_1d(axes), STATISTICS, strict=True):
        ax.scatter(table[ROBUST], table[name])
        for _, row in table.iterrows():
            ax.annotate(str(row.model), (row[ROBUST], row[name]), fontsize=7)
        ax.set_xlabel("robust accuracy")
        ax.set_ylabel(name)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.3f}"
    return "–" if value is None or value is pd.NA else str(value)


SHOWN = ["model", "architecture", "extra_data", "training_method", *STATISTICS,
         "own_robust_accuracy", "zoo_autoattack_accuracy"]  # fmt: skip
CORRELATION_SHOWN = ["statistic", "models", "spearman", "low", "high"]
TITLE = "Model zoo"
CAPTION = "NC statistics against robust accuracy, one point per zoo model"


@dataclass
class ZooSummary:
    """The measured zoo models of one report: the summary table and the rank correlations."""

    table: pd.DataFrame
    correlations: pd.DataFrame

    @staticmethod
    def _rows(frame: pd.DataFrame) -> list[list[str]]:
        return [[_cell(v) for v in row] for row in frame.itertuples(False)]

    def model_rows(self) -> list[list[str]]:
        """The summary table's shown columns (:data:`SHOWN`) as text, one row per model."""
        return self._rows(self.table[SHOWN])

    def correlation_rows(self) -> list[list[str]]:
        """The correlations' shown columns (:data:`CORRELATION_SHOWN`) as text."""
        return self._rows(self.correlations[CORRELATION_SHOWN])

    def note(self) -> str:
        """Which robust accuracy the correlations use."""
        sources = ", ".join(sorted(set(self.table.robust_source)))
        return (
            f"Robust accuracy correlated: {sources} (the zoo's AutoAttack where its leaderboard "
            "entry is available locally, else the project's own attack on the measured points)."
        )

    def findings(self) -> list[str]:
        """One sentence per NC statistic: what holds across the defenses measured."""
        return [finding(row) for _, row in self.correlations.iterrows()]


def summarize(folders: Sequence[Path]) -> ZooSummary:
    """The summary of the zoo model directories ``folders``."""
    table = pd.DataFrame([summary_row(f) for f in folders])
    return ZooSummary(table, correlations(table))


def zoo_folders(paths: Iterable[Path]) -> list[Path]:
    """Those of ``paths`` that are measured zoo models (they hold ``zoo.yaml``)."""
    return [Path(p) for p in paths if (Path(p) / ZOO_FILE).is_file()]


def section_markdown(
    summary: ZooSummary, figure: str | None, heading: str = f"## {TITLE}", table: Any = None
) -> str:
    """The "model zoo" section as Markdown, the figure linked as ``figure`` (None: not drawn);
    ``table`` renders (header, rows) (default: plain Markdown cells)."""
    render = table or _markdown
    return "\n\n".join(
        [
            heading,
            render(SHOWN, summary.model_rows()),
            summary.note(),
            render(CORRELATION_SHOWN, summary.correlation_rows()),
            *([f"![{CAPTION}]({figure})"] if figure else []),
            "### Findings across defenses\n\n" + "\n".join(f"- {f}" for f in summary.findings()),
        ]
    )


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_summary(folders: Sequence[Path], out: Path, title: str) -> pd.DataFrame:
    """The summary table, correlations, figure and ``zoo_report.md`` of the measured models."""
    summary = summarize(folders)
    atomic_write_parquet(summary.table, out / SUMMARY_FILE)
    atomic_write_parquet(summary.correlations, out / CORRELATION_FILE)
    draw(summary.table, out / FIGURE_FILE)
    text = section_markdown(summary, FIGURE_FILE, heading=f"## {TITLE}: {title}")
    atomic_write_text(out / REPORT_FILE, text + "\n")
    return summary.table
