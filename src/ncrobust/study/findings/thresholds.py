"""The numbers each verdict is compared with, each with where in the paper its default comes from.

Every criterion is a ratio, a fraction or an angle relative to the run's own baseline, so one
default means the same on CIFAR-10 and CIFAR-100 (NC1 is not divided by C and grows with it).
Each default names the section, figure or sentence of the paper it comes from, or says that it
is the project's own choice and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from ncrobust.errors import UsageError


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
        "training accuracy' (0.95: the project's allowance for small runs)",
    )
    attack_success: float = _threshold(
        0.5,
        "preconditions of 1, 1b, 7, 7b: ST network accuracy on pgd data, at most (the attack "
        "moves most points; else inconclusive)",
        "Fig. 2: ST robust accuracy falls to about 0 under the paper's attack (0.5: the "
        "project's 'most points')",
    )
    targeted_accuracy: float = _threshold(
        0.5,
        "precondition of 2: rate of targeted examples predicted as their target, at least "
        "(else inconclusive: the radius, not the claim, is tested)",
        "Sec. 3.1 l.85-90: the leap is read on examples moved to their target class (0.5: the "
        "project's 'most examples')",
    )
    early_phase: float = _threshold(
        0.25,
        "findings 0, 3, 4b: the early phase whose peak a curve's fall is measured from, as a "
        "fraction of the last measured epoch (the curve interpolated at its end, so the "
        "measurement cadence does not change the reference)",
        "project's choice: Fig. 2's NC1 curves peak within the first quarter of training; "
        "a fraction of the run's own length keeps the criterion free of --measure-every",
    )
    st_clean_nc1_drop: float = _threshold(
        0.1,
        "finding 0: ST clean NC1 at the last epoch / its early-phase peak, at most",
        "Sec. 3.1 l.79: 'NC metrics converge on the clean training data'; Fig. 2 (log axis): "
        "clean NC1 falls by orders of magnitude (default: at least one)",
    )
    st_clean_nc4: float = _threshold(
        0.05,
        "finding 0: ST clean NC4 (network vs NCC disagreement) at the last epoch, at most",
        "Sec. 2 l.62 and Fig. 2: NC4 converges to 0 on clean training data (0.05: the "
        "project's tolerance, 1 point in 20)",
    )
    st_pgd_nc1_ratio: float = _threshold(
        10.0,
        "finding 1: ST NC1 pgd / NC1 clean, at least",
        "Sec. 3.1 l.80-81 and Fig. 2: collapse 'disappears strikingly' on perturbed data "
        "(perturbed NC1 an order of magnitude or more above clean)",
    )
    st_pgd_nc1_per_class: float = _threshold(
        1.0,
        "finding 1: ST NC1 pgd / (C-1), at least (no collapse in absolute terms)",
        "project's choice: NC1 = Tr(Sigma_B^+ Sigma_W) sums over the C-1 between-class "
        "directions; 1 per direction means the within-class spread is as large as the "
        "distance between classes (Sec. 3.1 l.80-84: no 'geometrically-meaningful structure')",
    )
    st_gaussian_nc1_ratio: float = _threshold(
        3.0,
        "finding 1: ST NC1 gaussian / NC1 clean, at most",
        "Sec. 3.1 l.80: collapse is only 'slightly attenuated on Gaussian reference data' "
        "(3: the project's 'slightly', well under a decade on Fig. 2's log axis)",
    )
    st_pgd_nc2_ratio: float = _threshold(
        2.0,
        "finding 1b: ST NC2 equiangular, NC3 and NC4 of pgd / clean data, at least",
        "project's choice: the paper gives no number for Sec. 3.1 l.83-84 (perturbed class "
        "means 'do not form any geometrically-meaningful structure', Fig. 2 NC2-NC4 panels); "
        "doubling is a rise no seed noise explains",
    )
    targeted_angle_fraction: float = _threshold(
        0.16,
        "finding 2: angle of targeted class means (by target) to the clean ones / the angle "
        "between different classes (centred: arccos(-1/(C-1)); non-centred: the run's own "
        "between_class_angle, when recorded), at most",
        "Fig. 7 caption: '0.2 rad' against 1.58 rad between classes; 0.2 is given to one "
        "digit (under 0.25 rad), and 0.25 / 1.58 = 0.16; Fig. 3 left",
    )
    leap_angle_fraction: float = _threshold(
        0.16,
        "finding 7: angle between clean class means and perturbed predicted-class means / "
        "the angle between classes, at most",
        "Fig. 7 caption: '0.2 rad' against arccos(-1/99) = 1.58 rad; 0.2 is given to one "
        "digit (under 0.25 rad), and 0.25 / 1.58 = 0.16",
    )
    label_skew: float = _threshold(
        0.8,
        "finding 7b: effective number of predicted classes (exp of the entropy of the "
        "predicted-label counts) on pgd data / the same on gaussian data, at most",
        "Fig. 7 left: perturbed predictions pile up on few labels (0.8: the project's choice, "
        "a fifth of the classes effectively lost)",
    )
    at_nc1_drop: float = _threshold(
        0.5,
        "finding 3: AT NC1 at the last epoch / its early-phase peak, at most (clean and perturbed)",
        "Sec. 3.2 l.93-95 and Fig. 2 (AT columns): 'Neural Collapse qualitatively occurs' for "
        "clean and perturbed data (0.5: the project's 'qualitatively', a clear fall)",
    )
    at_perturbed_above_clean: float = _threshold(
        1.0,
        "finding 3: AT NC1 perturbed / NC1 clean, at least",
        "Sec. 3.2 l.95-97: 'the extent of variability collapse (NC1) on the perturbed points "
        "is smaller than on the clean data'",
    )
    at_simplex_fraction: float = _threshold(
        0.1,
        "findings 3, 3c: AT simplex similarity (3) and non-centred angular distance (3c) of "
        "perturbed and clean means / the angle between classes, at most",
        "Sec. 3.2 l.98-100 and Fig. 3 right: 'the vanishing distance suggests these two "
        "simplices are exactly the same' (0.1: the project's 'vanishing', below the 0.16 "
        "of a leap to a neighbouring mean in Fig. 7)",
    )
    at_gaussian_match: float = _threshold(
        1.25,
        "finding 3b: largest factor between AT NC1 of gaussian and clean data over the "
        "measured epochs, at most",
        "Fig. 2 caption: 'For AT models, clean and Gaussian curves coincide' (1.25: the "
        "project's 'coincide', a tenth of a decade on Fig. 2's log axis)",
    )
    at_ncc_gap: float = _threshold(
        0.05,
        "findings 3, 3d: |NCC accuracy - network accuracy| (3) and NC4, the NCC-network "
        "disagreement (3d), on AT perturbed data, at most",
        "Sec. 3.2 l.103-105: NC4 implies a nearest-neighbour classifier as robust as the net "
        "(0.05: the project's tolerance, 1 point in 20)",
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
        "Sec. 3.2 l.110-111 and Fig. 4: TRADES features 'do not approach the ETF formation' "
        "(2: the project's choice, as st_pgd_nc2_ratio)",
    )
    trades_kl_drop: float = _threshold(
        0.1,
        "finding 4b: TRADES KL term of the training loss at the last epoch / its early-phase "
        "peak, at most",
        "Sec. 3.2 l.108-109: 'both terms of the loss (see Equation 4) are driven to zero'; "
        "App. D l.369-371 and Fig. 4 (KL panel); default: one order of magnitude",
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
        "App. G l.409-410: 'the feature variability collapses progressively' (0.5: the "
        "project's choice of a clear monotone trend)",
    )
    layer_slope_ratio: float = _threshold(
        0.8,
        "finding 5b: slope of log10 NC1 per unit depth, AT / ST, at most (AT falls slower)",
        "App. G l.410-411: collapse 'undergoes a slower decrease in the case of adversarial "
        "training'; Fig. 11 caption (0.8: the project's choice, at least a fifth slower so "
        "that noise is not called slower)",
    )
    ncc_robust_margin: float = _threshold(
        0.2,
        "findings 6, 6d: best early-layer NCC accuracy on pgd (6: transfer; 6d: adaptive "
        "attack on the NCC rule) minus network accuracy on pgd, at least",
        "App. G l.415-417: the early-layer NCC classifier is '~40 %' robust where the ST "
        "network is ~0 % (default: half that margin)",
    )
    ncc_fade_margin: float = _threshold(
        0.1,
        "finding 6b: last feature layer's NCC accuracy on pgd minus network accuracy, at most",
        "App. G, Fig. 12: NCC robustness falls to the network's level in the last layers "
        "(0.1: the project's choice, half of ncc_robust_margin)",
    )
    st_over_at_ncc: float = _threshold(
        0.05,
        "finding 6c: best early-layer NCC accuracy on pgd of ST minus the best layer's of AT, "
        "at least",
        "App. G l.417-418: 'this robustness is higher than the one of the simple classifiers "
        "defined by layers of an adversarially trained model' (0.05: the project's margin)",
    )
    early_nc1_ratio: float = _threshold(
        3.0,
        "finding 8: ST NC1 pgd / clean at the first measured layer, at most",
        "App. G l.412-413: perturbed data 'exhibit the same amount of clustering as those of "
        "the original data for the earlier layers' (3: as st_gaussian_nc1_ratio)",
    )
    layer_divergence: float = _threshold(
        3.0,
        "finding 8: (NC1 pgd / clean at the last layer) / (at the first layer), at least",
        "App. G l.411-412 and Fig. 11: perturbed data fail 'to collapse at the final layer' "
        "(3: the project's choice, as early_nc1_ratio)",
    )
    eps_monotone_ratio: float = _threshold(
        1.0,
        "findings 9a, 9b: smallest ratio of perturbed NC metrics between consecutive eps "
        "(9a: ST, attack eps rising; 9b: AT at one attack eps, training eps falling), more "
        "than this",
        "App. H l.425-429: AT 'progressively induces more robust NC metrics' (Fig. 15) and ST "
        "NC metrics 'increase monotonically with adversarial strength' (Fig. 16)",
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise UsageError(f"threshold {f.name} must be a finite number, got {value!r}")

    @staticmethod
    def describe() -> dict[str, str]:
        """Field name -> what the threshold means."""
        return {f.name: str(f.metadata.get("help", "")) for f in fields(Thresholds)}

    @staticmethod
    def sources() -> dict[str, str]:
        """Field name -> where in the paper its default comes from."""
        return {f.name: str(f.metadata.get("source", "")) for f in fields(Thresholds)}
