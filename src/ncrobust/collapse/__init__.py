"""Exact, streaming, mergeable Neural Collapse metrics (NC1–NC4, NCC, simplex comparisons, and
the literature's CDNV, Tr(Σ_W)/Tr(Σ_B), ETF error, GNC2 and UNC3, with per-class detail).

Nothing here knows about models, attacks or training: everything takes feature tensors.
``collapse_metrics`` is the one-call in-memory form; ``CollapseAccumulator`` streams a data set
in two passes with O(C·p) memory and all-reduces under torch.distributed; ``AttackStatistics``
gives the per-class statistics of the paper's Figure 7.
"""

from ncrobust.collapse.accumulator import CollapseAccumulator
from ncrobust.collapse.attack_stats import AttackStatistics
from ncrobust.collapse.metrics import class_means, collapse_metrics

__all__ = ["AttackStatistics", "CollapseAccumulator", "class_means", "collapse_metrics"]
