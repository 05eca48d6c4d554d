"""The numbers each verdict is compared with, each with where in the paper its default comes from.

Every criterion is a ratio, a fraction or an angle relative to the run's own baseline, so one
default means the same on CIFAR-10 and CIFAR-100 (NC1 is not divided by C and grows with it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields


def _threshold(default: float, help_text: str, source: str) -> float:
    return field(default=default, metadata={"help": help_text, "source": source})


@dataclass(frozen=True)
class Thresholds:
    """Thresholds of the verdicts (every one settable by a report flag)."""

    terminal_accuracy: float = _threshold(
        0.95,
        "preconditions: training accuracy (robust training accuracy for AT) at the compared "
        "epoch, at least (else inconclusive: not in the terminal phase)",
        "Sec. 3.2 l.92: networks trained 'to full convergence with perfect clean and robust "
        "training accuracy'",
    )
    attack_success: float = _threshold(
        0.5,
        "preconditions of 1, 1b, 7: ST network accuracy on pgd data, at most (the attack "
        "moves most points; else inconclusive)",
        "Fig. 2: ST robust accuracy falls to about 0 under the paper's attack",
    )
    targeted_accuracy: float = _threshold(
        0.5,
        "precondition of 2: rate of targeted examples predicted as their target, at least "
        "(else inconclusive: the radius, not the claim, is tested)",
        "Sec. 3.1 l.85-90: the leap is read on examples moved to their target class",
    )
    st_pgd_nc1_ratio: float = _threshold(
        10.0,
        "finding 1: ST NC1 pgd / NC1 clean, at least",
        "Sec. 3.1 l.80-81 and Fig. 2: collapse 'disappears strikingly' on perturbed data "
        "(perturbed NC1 an order of magnitude or more above clean)",
    )
    st_gaussian_nc1_ratio: float = _threshold(
        3.0,
        "finding 1: ST NC1 gaussian / NC1 clean, at most",
        "Sec. 3.1 l.80: collapse is only 'slightly attenuated on Gaussian reference data'",
    )
    st_pgd_nc2_ratio: float = _threshold(
        2.0,
        "finding 1b: ST NC2 equiangular pgd / clean, at least",
        "Sec. 3.1 l.83-84 and Fig. 2 (NC2 panels): perturbed class means 'do not form any "
        "geometrically-meaningful structure'",
    )
    targeted_angle_fraction: float = _threshold(
        0.25,
        "finding 2: angle of targeted class means (by target) to the clean ones / the angle "
        "between different classes (centred: arccos(-1/(C-1)); non-centred: the run's own "
        "between_class_angle, when recorded), at most",
        "Fig. 7 caption: ~0.2 rad against 1.58 rad between classes (ratio 0.13); Fig. 3 left",
    )
    leap_angle_fraction: float = _threshold(
        0.25,
        "finding 7: angle between clean class means and perturbed predicted-class means / "
        "the angle between classes, at most",
        "Fig. 7 caption: 0.2 rad against arccos(-1/99) = 1.58 rad (ratio 0.13)",
    )
    at_nc1_drop: float = _threshold(
        0.5,
        "findings 3, 9b: AT NC1 at the last epoch / NC1 at the first measured epoch after "
        "initialisation (epoch 1 when measured), at most (clean and perturbed)",
        "Sec. 3.2 l.93-95 and Fig. 2 (AT columns): NC1 of clean and perturbed data falls over "
        "training ('Neural Collapse qualitatively occurs')",
    )
    at_perturbed_above_clean: float = _threshold(
        1.0,
        "finding 3: AT NC1 perturbed / NC1 clean, at least",
        "Sec. 3.2 l.95-97: 'the extent of variability collapse (NC1) on the perturbed points "
        "is smaller than on the clean data'",
    )
    at_simplex_fraction: float = _threshold(
        0.25,
        "finding 3: AT simplex similarity of perturbed and clean means / arccos(-1/(C-1)), at most",
        "Sec. 3.2 l.98-100 and Fig. 3 right: 'the vanishing distance suggests these two "
        "simplices are exactly the same'",
    )
    at_ncc_gap: float = _threshold(
        0.05,
        "finding 3: |NCC accuracy - network accuracy| on AT perturbed data, at most",
        "Sec. 3.2 l.103-105: NC4 implies a nearest-neighbour classifier as robust as the net",
    )
    trades_nc1_ratio: float = _threshold(
        math.sqrt(10.0),
        "finding 4: TRADES clean NC1 / AT clean NC1, at least",
        "Sec. 3.2 l.110: 'roughly one order of magnitude larger than for vanilla AT' (default "
        "sqrt(10): nearer 10x than 1x on a log scale)",
    )
    trades_nc2_ratio: float = _threshold(
        2.0,
        "finding 4: TRADES clean NC2 equiangular / AT's, at least (no simplex)",
        "Sec. 3.2 l.110-111 and Fig. 4: TRADES features 'do not approach the ETF formation'",
    )
    min_layers: float = _threshold(
        3.0,
        "preconditions of 5a-8: measured feature layers, at least (else inconclusive)",
        "App. G l.407: the input of every conv and linear layer (8 for VGG11, 6 for "
        "ResNet18); a trend over depth needs at least 3",
    )
    layer_spearman: float = _threshold(
        0.5,
        "finding 5a: Spearman correlation of clean NC1 with depth, at most minus this",
        "App. G l.409-410: 'the feature variability collapses progressively'",
    )
    layer_slope_margin: float = _threshold(
        0.0,
        "finding 5b: AT minus ST slope of log10 NC1 per unit depth, more than this",
        "App. G l.410-411: collapse 'undergoes a slower decrease in the case of adversarial "
        "training'; Fig. 11 caption",
    )
    ncc_robust_margin: float = _threshold(
        0.2,
        "finding 6: best early-layer NCC accuracy on pgd minus network accuracy on pgd, at least",
        "App. G l.415-417: the early-layer NCC classifier is '~40 %' robust where the ST "
        "network is ~0 % (default: half that margin)",
    )
    ncc_fade_margin: float = _threshold(
        0.1,
        "finding 6b: last feature layer's NCC accuracy on pgd minus network accuracy, at most",
        "App. G, Fig. 12: NCC robustness falls to the network's level in the last layers",
    )
    early_nc1_ratio: float = _threshold(
        3.0,
        "finding 8: ST NC1 pgd / clean at the first measured layer, at most",
        "App. G l.412-413: perturbed data 'exhibit the same amount of clustering as those of "
        "the original data for the earlier layers'",
    )
    layer_divergence: float = _threshold(
        3.0,
        "finding 8: (NC1 pgd / clean at the last layer) / (at the first layer), at least",
        "App. G l.411-412 and Fig. 11: perturbed data fail 'to collapse at the final layer'",
    )
    eps_monotone_ratio: float = _threshold(
        1.0,
        "finding 9a: smallest ratio of ST perturbed NC1 between consecutive attack eps, more "
        "than this",
        "App. H l.427-429: ST NC metrics 'increase monotonically with adversarial strength'",
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"threshold {f.name} must be a finite number, got {value!r}")

    @staticmethod
    def describe() -> dict[str, str]:
        """Field name -> what the threshold means."""
        return {f.name: str(f.metadata.get("help", "")) for f in fields(Thresholds)}

    @staticmethod
    def sources() -> dict[str, str]:
        """Field name -> where in the paper its default comes from."""
        return {f.name: str(f.metadata.get("source", "")) for f in fields(Thresholds)}
