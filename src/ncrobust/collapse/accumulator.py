"""The streaming, mergeable, exact Neural Collapse accumulator: two passes over the same data,
O(C·p) memory, float64 sums, all-reduced under torch.distributed.

Pass 1 (``update`` for every batch) collects per-class counts and sums. ``next_pass`` turns them
into the class means μ_c, the count-weighted global mean μ_G and the eigendecomposition
Σ_B = M Mᵀ / C = U Λ Uᵀ (U: p×k, k = min(p, C), spanning every μ_c − μ_G). Pass 2 (``update``
again) turns each chunk of rows into h − μ_y as it converts it to float64, then needs one
matmul, z = (h − μ_y) [U, R, W] (R: the centred reference means; W only when no logits are
given), and works in k dimensions, adding the C×k′ table μ_c [U, R, W] back where h itself is
needed, a block of a few thousand rows at a time so that no N-row temporary is formed:

* NC1 = Tr(Σ_B^† Σ_W) = (1/N) Σ_i ‖Λ^{-1/2} Uᵀ (h_i − μ_{y_i})‖² over the kept eigenvalues;
* the nearest class centre argmin_c ‖h − μ_c‖² = argmin_c β_c − 2⟨Uᵀh, Uᵀ(μ_c − g)⟩ with
  β_c = ‖μ_c − g‖² + 2⟨g, μ_c − g⟩ for g = μ_G: ‖h‖² is the same for every c and drops out,
  and μ_c − g lies in the span of U. Reference means use their own columns and centre;
* σ_c² = mean over class c of ‖h_i − μ_c‖², the row norms of the same explicit difference
  (no ‖h‖² − ‖μ_c‖² cancellation): CDNV and Tr(Σ_W).

Pass-2 sums are kept per true class (C × 8), so the per-class table and the totals come from
the same all-reduced numbers. A class with no sample leaves its row empty: every metric is then
taken over the classes present (Σ_B, the simplex, CDNV pairs, the NCC's candidate means),
``missing_classes`` names the others and ``compute()`` adds their number as
``missing_classes``; at least two classes must have samples.

Precision: features are converted to float64 a chunk at a time and every product and sum is
float64. Centring the means inside the inner products keeps the rounding error of the NCC scores
at eps·‖h‖·‖μ_c − g‖ instead of eps·‖h‖·‖μ_c‖ (post-ReLU features share a large common
component), so the argmin agrees with a direct float64 ‖h − μ_c‖ except at exact ties.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor

from ncrobust.collapse import geometry
from ncrobust.collapse._checks import (
    as_feature_matrix,
    as_labels,
    as_logits,
    as_matrix,
    check_num_classes,
    check_width,
    empty_class_message,
)
from ncrobust.collapse._sums import (
    ClassSums,
    all_reduce_sum,
    block_rows,
    float64_chunks,
    sync_requested,
)
from ncrobust.runtime import resolve_device

NEEDS_EVERY_CLASS = "means() needs every class (compute() and per_class() use the classes present)"
# columns of the per-class pass-2 sums (C × PASS2_COLUMNS), indexed by the sample's true class
COUNT, NC1_SUM, WITHIN, MISMATCH, REF_MATCH, REF_CORRECT, PREDICTED, SELF_CORRECT = range(8)
PASS2_COLUMNS = 8


@dataclass
class _Finalised:
    """Everything pass 2 and ``compute`` need, fixed by ``next_pass`` and never mutated."""

    counts: Tensor  # C, int64
    present: Tensor  # C, bool: the classes with at least one sample
    means: Tensor  # C×p (rows of absent classes are NaN)
    global_mean: Tensor  # p
    centred: Tensor  # C′×p, μ_c − μ_G of the C′ classes present
    basis: Tensor  # p×k, U
    inverse: Tensor  # k, 1/λ for the eigenvalues Σ_B^† keeps, 0 for the others
    ncc_slopes: Tensor  # k×C, −2 Uᵀ(μ_c − μ_G) as columns (0 for absent classes)
    beta: Tensor  # C, NCC offsets of the data's own means (+inf for absent classes)
    ref_centred: Tensor | None  # C×p, reference means minus the reference global mean
    ref_global_mean: Tensor | None
    ref_beta: Tensor | None
    filled_means: Tensor  # C×p, μ_c with 0 for absent classes (pass 2 subtracts μ_y)
    stacks: dict[bool, tuple[Tensor, dict[str, slice]]] = field(default_factory=dict)
    stack_at_means: dict[bool, Tensor] = field(default_factory=dict)  # C×k′, μ_c @ stack


class CollapseAccumulator:
    """Exact NC metrics of a data set streamed in batches over two passes.

    ``update`` every batch, ``next_pass()``, ``update`` every batch again (same data, any batch
    order or size), ``compute()``. ``weight``/``bias`` are the last linear layer (C×p, C); they
    add the W metrics and, when no logits are given, the network's prediction argmax(W h + b).
    ``reference_means`` (C×p) are the class means of a reference set S (e.g. the clean training
    set, from another accumulator's ``means()``); they add ``ncc_accuracy``, ``ncc_match``,
    ``simplex_similarity`` and ``angular_distance``. The reference simplex is centred by
    ``reference_global_mean`` when given (pass ``global_mean()`` of the reference accumulator for
    the exact count-weighted μ_G) and by the plain average of the reference means otherwise,
    which is the same thing for class-balanced reference data. ``self_reference=True`` takes
    the data's own means as the reference (S′ = S, where the paper notes both NCC quantities
    stem from NC4): it adds ``ncc_accuracy`` and ``ncc_match`` (= 1 − nc4).

    State lives on ``device`` (default: the first batch's device). ``sync`` all-reduces the sums
    in ``next_pass`` and ``compute``; by default it does so when a torch.distributed process
    group of more than one process is initialised, so each process feeds its own shard.
    ``per_class()`` gives the per-class detail as a tidy table (call it on every process, as
    ``compute()``).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        weight: Tensor | None = None,
        bias: Tensor | None = None,
        reference_means: Tensor | None = None,
        reference_global_mean: Tensor | None = None,
        device: torch.device | str | None = None,
        sync: bool | None = None,
        self_reference: bool = False,
    ) -> None:
        self.num_classes = check_num_classes(num_classes)
        if self_reference and reference_means is not None:
            raise ValueError("self_reference and reference_means exclude each other")
        self._self_reference = self_reference
        num_features: int | None = None
        self._width_source = ""
        if weight is not None:
            weight = as_matrix(weight, (num_classes, None), "weight", "num_classes × features")
            num_features, self._width_source = weight.shape[1], "weight has"
        if bias is not None:
            if weight is None:
                raise ValueError("bias given without weight")
            bias = as_matrix(bias, (num_classes,), "bias", "one value per class")
        if reference_means is not None:
            reference_means = as_matrix(
                reference_means,
                (num_classes, num_features),
                "reference_means",
                "num_classes × features, the same features as weight",
            )
            num_features, self._width_source = reference_means.shape[1], "reference_means has"
        if reference_global_mean is not None:
            if reference_means is None:
                raise ValueError("reference_global_mean given without reference_means")
            reference_global_mean = as_matrix(
                reference_global_mean, (num_features,), "reference_global_mean", "features"
            )
        if weight is not None and bias is None:
            bias = torch.zeros(num_classes, dtype=torch.float64)
        self._weight = weight
        self._bias = bias
        self._reference_means = reference_means
        self._reference_global_mean = reference_global_mean
        self._num_features = num_features
        self._device: torch.device | None = None
        self._sync = sync
        self._stage = 1  # 1: pass 1, 2: pass 2, 3: computed
        self._sums: ClassSums | None = None
        self._final: _Finalised | None = None
        self._second: Tensor | None = None
        self._reduced: Tensor | None = None
        self._result: dict[str, float] | None = None
        self._per_class: pd.DataFrame | None = None
        if device is not None:
            self._bind(resolve_device(str(device)))

    # -- public API ------------------------------------------------------------------------

    @property
    def num_features(self) -> int | None:
        """p, the flattened feature width (None until known from weight, reference or data)."""
        return self._num_features

    @property
    def current_pass(self) -> int:
        """1 before ``next_pass()``, 2 after it, 3 once ``compute()`` has run."""
        return self._stage

    def update(self, features: Tensor, labels: Tensor, logits: Tensor | None = None) -> None:
        """Add a batch: features (n, ...) flattened per sample, labels (n,), logits (n, C).

        Logits are the network's outputs for the batch; pass 2 uses their argmax as the
        network's prediction (NC4, NCC match). Pass 1 checks their shape and otherwise ignores
        them, so the same call can serve both passes.
        """
        if self._stage == 3:
            raise ValueError("update() after compute(): this accumulator is finished")
        h = as_feature_matrix(features)
        n, p = h.shape
        check_width(p, self._num_features, "features", self._width_source)
        y = as_labels(labels, n, self.num_classes)
        if logits is not None:
            logits = as_logits(logits, n, self.num_classes)
        if self._device is None:
            self._bind(h.device)
        assert self._device is not None
        if self._num_features is None:
            self._num_features, self._width_source = p, "earlier batches had"
        h, y = h.to(self._device), y.to(self._device)
        if self._stage == 1:
            self._first_pass(h, y)
        else:
            self._second_pass(h, y, None if logits is None else logits.to(self._device))

    def next_pass(self) -> None:
        """End pass 1: all-reduce the sums, fix the means and the NC1 projection, open pass 2."""
        if self._stage != 1:
            raise ValueError(
                "next_pass() called twice" if self._stage == 2 else "next_pass() after compute()"
            )
        if self._sums is None:
            raise ValueError("next_pass() before any update(): pass 1 saw no sample")
        if sync_requested(self._sync):
            self._sums.all_reduce()
        present = (self._sums.counts > 0).nonzero().flatten().tolist()
        if len(present) < 2:
            seen = f"only class {present[0]} has" if present else "no class has"
            raise ValueError(
                f"{seen} samples: Neural Collapse metrics need samples of at least two classes"
            )
        self._final = self._finalise(self._sums)
        self._second = torch.zeros(
            self.num_classes, PASS2_COLUMNS, dtype=torch.float64, device=self._sums.sums.device
        )
        self._stage = 2

    def compute(self) -> dict[str, float]:
        """The metrics as plain floats (see ``collapse_metrics`` for the keys); idempotent."""
        if self._result is not None:
            return dict(self._result)
        final, second = self._final, self._reduced_sums()
        assert final is not None
        present = final.present
        totals = second.sum(dim=0)
        n = totals[COUNT]
        centred = final.centred  # the classes present
        variances = second[present, WITHIN] / second[present, COUNT]
        values: dict[str, Tensor] = {
            "nc1": totals[NC1_SUM] / n,
            "nc1_trace_ratio": geometry.trace_ratio(totals[WITHIN] / n, centred),
            "cdnv": geometry.cdnv(centred, variances),
            "nc2_equinorm": geometry.equinorm(centred),
            "nc2_equinorm_std": geometry.norm_spread(centred),
            "nc2_equiangular": geometry.equiangular(centred),
            "etf_error": geometry.etf_error(centred),
            "gnc2": geometry.gnc2(centred),
            "between_class_angle": geometry.pairwise_angle(final.means[present]),
        }
        if self._weight is not None:
            weight = self._weight[present]
            values["nc2_equinorm_w"] = geometry.equinorm(self._weight)
            values["nc2_equiangular_w"] = geometry.equiangular(self._weight)
            values["nc3"] = geometry.nc3(weight, centred)
            values["nc3_frobenius"] = geometry.nc3_frobenius(weight, centred)
            values["unc3"] = geometry.unc3(weight, centred)
        predicted = int(totals[PREDICTED].round())
        if 0 < predicted < int(n):
            raise ValueError(
                f"logits were given for {predicted} of {int(n)} pass-2 samples: give them for "
                "every batch (or a weight) to get nc4 and ncc_match"
            )
        if predicted:
            values["nc4"] = totals[MISMATCH] / n
        if self._self_reference:  # S′ = S: the NCC classifier of the data's own means
            if predicted:
                values["ncc_match"] = 1.0 - values["nc4"]
            values["ncc_accuracy"] = totals[SELF_CORRECT] / n
        if final.ref_centred is not None:
            assert self._reference_means is not None and final.ref_global_mean is not None
            if predicted:
                values["ncc_match"] = totals[REF_MATCH] / n
            values["ncc_accuracy"] = totals[REF_CORRECT] / n
            values["simplex_similarity"] = geometry.simplex_similarity(
                final.means[present],
                final.global_mean,
                self._reference_means[present],
                final.ref_global_mean,
            )
            values["angular_distance"] = geometry.angular_distance(
                final.means[present], self._reference_means[present]
            )
        missing = self.num_classes - int(present.sum())
        if missing:
            values["missing_classes"] = torch.tensor(float(missing), dtype=n.dtype, device=n.device)
        floats = torch.stack(list(values.values())).tolist()  # one device sync for all
        self._result = dict(zip(values, floats, strict=True))
        self._stage = 3
        return dict(self._result)

    def per_class(self) -> pd.DataFrame:
        """Per-class detail as a tidy table with columns ``class``, ``metric``, ``value``.

        Metrics per class c: ``count`` (samples), ``sigma2`` (σ_c² = mean ‖h_i − μ_c‖²),
        ``centred_mean_norm`` (‖μ_c − μ_G‖), ``cdnv`` (the mean over c′ ≠ c of the pair's
        CDNV term), and with a weight ``cos_weight_mean`` (cos(w_c, μ_c − μ_G)); with
        predictions (logits or a weight) ``nc4`` (share of class-c samples whose network
        prediction differs from the nearest own class mean); ``ncc_accuracy`` (share of class-c
        samples the NCC classifier assigns to c: the reference means' NCC when reference means
        are given, the data's own means' otherwise) and, with predictions, ``ncc_match`` (share
        where the network agrees with that NCC). A class with no sample has only its
        ``count`` row (0). Runs ``compute()`` first if it has not run (and, like it, all-reduces
        under torch.distributed: call it on every process).
        """
        if self._per_class is not None:
            return self._per_class.copy()
        values = self.compute()
        final, second = self._final, self._reduced
        assert final is not None and second is not None
        present = final.present
        counts = second[:, COUNT]
        columns: dict[str, Tensor] = {"count": counts}
        full = torch.full_like(counts, float("nan"))

        def spread(per_present: Tensor) -> Tensor:
            out = full.clone()
            out[present] = per_present
            return out

        columns["sigma2"] = second[:, WITHIN] / counts
        columns["centred_mean_norm"] = spread(final.centred.norm(dim=1))
        columns["cdnv"] = spread(geometry.cdnv_per_class(final.centred, columns["sigma2"][present]))
        if self._weight is not None:
            columns["cos_weight_mean"] = spread(
                geometry.cosines(self._weight[present], final.centred)
            )
        predicted = "nc4" in values
        if predicted:
            columns["nc4"] = second[:, MISMATCH] / counts
        reference = final.ref_centred is not None
        columns["ncc_accuracy"] = second[:, REF_CORRECT if reference else SELF_CORRECT] / counts
        if predicted:
            columns["ncc_match"] = (
                second[:, REF_MATCH] / counts if reference else 1.0 - second[:, MISMATCH] / counts
            )
        table = torch.stack(list(columns.values()), dim=1).cpu()  # one transfer for all
        keep = present.cpu()
        rows = []
        for c in range(self.num_classes):
            if not bool(keep[c]):
                rows.append((c, "count", 0.0))
                continue
            rows += [(c, name, float(table[c, j])) for j, name in enumerate(columns)]
        frame = pd.DataFrame(rows, columns=["class", "metric", "value"])
        self._per_class = frame
        return frame.copy()

    @property
    def missing_classes(self) -> tuple[int, ...]:
        """The classes with no sample (after ``next_pass()``): every metric is taken over the
        others (``compute()`` reports their number as ``missing_classes``)."""
        final = self._finalised("missing_classes")
        return tuple((~final.present).nonzero().flatten().tolist())

    def _reduced_sums(self) -> Tensor:
        """Pass 2's per-class sums over all processes, checked against pass 1's counts."""
        if self._reduced is not None:
            return self._reduced
        if self._stage != 2:
            raise ValueError("compute() before next_pass(): run pass 1, next_pass(), then pass 2")
        final, second = self._final, self._second
        assert final is not None and second is not None
        if sync_requested(self._sync):
            second = second.clone()
            all_reduce_sum(second)
        counts2 = second[:, COUNT].round().to(torch.int64)
        if not torch.equal(counts2, final.counts):
            raise ValueError(
                f"pass 2 saw {int(counts2.sum())} samples with per-class counts that differ from "
                f"pass 1's ({int(final.counts.sum())} samples): both passes must see the same data"
            )
        self._reduced = second
        return second

    def merge(self, other: CollapseAccumulator) -> None:
        """Add ``other``'s sums to this accumulator; both must be in the same pass.

        In pass 2 both must hold identical finalised means (e.g. ``other`` came from ``fork()``
        of this accumulator, or both saw the same pass-1 data and merged it before
        ``next_pass()``); otherwise their within-class spreads are not comparable.
        """
        if not isinstance(other, CollapseAccumulator):
            raise TypeError(f"can only merge a CollapseAccumulator, got {type(other).__name__}")
        if other is self:
            raise ValueError("cannot merge an accumulator with itself")
        if other.num_classes != self.num_classes:
            raise ValueError(
                f"cannot merge accumulators with {self.num_classes} and {other.num_classes} classes"
            )
        if 3 in (self._stage, other._stage):
            raise ValueError("cannot merge an accumulator after compute()")
        if other._stage != self._stage:
            raise ValueError(
                f"cannot merge an accumulator in pass {other._stage} into one in pass {self._stage}"
            )
        if None not in (self._num_features, other._num_features):
            check_width(other._num_features or 0, self._num_features, "merged features", "this has")
        for name in ("_weight", "_bias", "_reference_means", "_reference_global_mean"):
            if not _same(getattr(self, name), getattr(other, name)):
                raise ValueError(f"cannot merge accumulators with different {name.lstrip('_')}")
        if self._stage == 1:
            if other._sums is None:
                return
            if self._device is None:
                self._bind(other._sums.sums.device)
            assert self._device is not None
            if self._sums is None:
                self._num_features = other._sums.num_features
                self._width_source = other._width_source
                self._sums = ClassSums(self.num_classes, other._sums.num_features, self._device)
            self._sums.add(other._sums.counts, other._sums.sums)
            return
        assert self._final is not None and other._final is not None
        assert self._second is not None and other._second is not None
        theirs = other._final.means.to(self._final.means.device)
        # rows of classes without a sample are NaN in both: compare them as equal
        if not torch.allclose(self._final.means, theirs, rtol=0.0, atol=0.0, equal_nan=True):
            raise ValueError(
                "cannot merge pass-2 accumulators whose class means differ: pass 2 needs the "
                "means of all the data (merge in pass 1, or fork() after next_pass())"
            )
        self._second += other._second.to(self._second.device)

    def fork(self) -> CollapseAccumulator:
        """A pass-2 accumulator with this one's finalised means and empty pass-2 sums.

        Feed it part of the pass-2 data (e.g. in another worker) and ``merge`` it back.
        """
        if self._stage != 2:
            raise ValueError("fork() needs an accumulator between next_pass() and compute()")
        assert self._second is not None
        twin = copy.copy(self)  # the finalised pass-1 state is shared: it is never mutated
        twin._second = torch.zeros_like(self._second)
        return twin

    def means(self) -> Tensor:
        """Class means μ_c (C×p, float64), available after ``next_pass()``; every class must
        have a sample."""
        final = self._finalised("means")
        message = empty_class_message(final.counts, NEEDS_EVERY_CLASS)
        if message is not None:
            raise ValueError(message)
        return final.means.clone()

    def global_mean(self) -> Tensor:
        """The count-weighted global mean μ_G (p, float64), available after ``next_pass()``."""
        return self._finalised("global_mean").global_mean.clone()

    def counts(self) -> Tensor:
        """Samples per class (C, int64), available after ``next_pass()``."""
        return self._finalised("counts").counts.clone()

    # -- internals -------------------------------------------------------------------------

    def _bind(self, device: torch.device) -> None:
        """Fix the state's device and move the constant inputs there."""
        self._device = device
        for name in ("_weight", "_bias", "_reference_means", "_reference_global_mean"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))

    def _finalised(self, what: str) -> _Finalised:
        if self._final is None:
            raise ValueError(f"{what}() before next_pass(): means are fixed at the end of pass 1")
        return self._final

    def _first_pass(self, h: Tensor, y: Tensor) -> None:
        if self._sums is None:
            assert self._device is not None
            self._sums = ClassSums(self.num_classes, h.shape[1], self._device)
        counts, sums = self._sums.batch(h, y)
        # a NaN or inf anywhere in the batch makes its class sum non-finite: one C×p check
        if not bool(torch.isfinite(sums).all()):
            raise ValueError("features contain NaN or inf values")
        self._sums.add(counts, sums)

    def _finalise(self, sums: ClassSums) -> _Finalised:
        counts = sums.counts
        present = counts > 0
        means = sums.means()
        global_mean = sums.sums.sum(dim=0) / counts.sum().to(torch.float64)
        centred = means[present] - global_mean
        basis, eigenvalues, keep = geometry.between_class_basis(centred)
        # absent classes: zero coordinates and an infinite NCC offset, so never the nearest
        ncc_slopes = torch.zeros(
            self.num_classes, basis.shape[1], dtype=torch.float64, device=basis.device
        )
        ncc_slopes[present] = -2.0 * (centred @ basis)
        beta = torch.full_like(counts, math.inf, dtype=torch.float64)
        beta[present] = _ncc_offsets(centred, global_mean)
        ref_centred = ref_global_mean = ref_beta = None
        if self._reference_means is not None:
            ref_global_mean = self._reference_global_mean
            if ref_global_mean is None:
                ref_global_mean = self._reference_means.mean(dim=0)
            ref_centred = self._reference_means - ref_global_mean
            ref_beta = _ncc_offsets(ref_centred, ref_global_mean)
        return _Finalised(
            counts=counts,
            present=present,
            means=means,
            global_mean=global_mean,
            centred=centred,
            basis=basis,
            inverse=torch.where(keep, eigenvalues.reciprocal(), 0.0),
            ncc_slopes=ncc_slopes.T.contiguous(),
            beta=beta,
            ref_centred=ref_centred,
            ref_global_mean=ref_global_mean,
            ref_beta=ref_beta,
            filled_means=torch.where(present[:, None], means, 0.0),
        )

    def _stack(self, final: _Finalised, use_weight: bool) -> tuple[Tensor, dict[str, slice]]:
        """The p×k′ matrix [U, reference means − g′, Wᵀ] of pass 2 and each block's columns."""
        if use_weight not in final.stacks:
            blocks = {"basis": final.basis}
            if final.ref_centred is not None:
                blocks["ref"] = final.ref_centred.T
            if use_weight:
                assert self._weight is not None
                blocks["weight"] = self._weight.T
            columns, start = {}, 0
            for name, block in blocks.items():
                columns[name] = slice(start, start + block.shape[1])
                start += block.shape[1]
            stack = torch.cat(list(blocks.values()), dim=1)
            final.stacks[use_weight] = (stack, columns)
            final.stack_at_means[use_weight] = final.filled_means @ stack
        return final.stacks[use_weight]

    def _second_pass(self, h: Tensor, y: Tensor, logits: Tensor | None) -> None:
        final, second = self._final, self._second
        assert final is not None and second is not None
        use_weight = logits is None and self._weight is not None
        matrix, _ = self._stack(final, use_weight)
        partial = torch.zeros_like(second)
        n = h.shape[0]
        block = block_rows(h, max(matrix.shape[1], self.num_classes)) if n else 0
        spread = torch.empty(block, matrix.shape[1], dtype=torch.float64, device=second.device)
        within = torch.empty(block, dtype=torch.float64, device=second.device)
        first = 0  # the current block's first row
        # every chunk arrives as h − μ_y: the spread ‖h − μ_y‖² is its row norm and the matmul
        # gives Uᵀ(h − μ_y) directly; only these two p-wide operations run per chunk
        for rows, chunk in float64_chunks(h, final.filled_means, y):
            local = slice(rows.start - first, rows.stop - first)
            torch.matmul(chunk, matrix, out=spread[local])
            torch.linalg.vector_norm(chunk, dim=1, out=within[local])
            if local.stop == block or rows.stop == n:  # a full block, or the batch's last
                done = slice(first, rows.stop)
                self._add_block(
                    partial,
                    spread[: local.stop],
                    within[: local.stop],
                    y[done],
                    None if logits is None else logits[done],
                    use_weight,
                )
                first = rows.stop
        # NaN or inf features reach every column of the matmul, hence the NC1 sum; labels of
        # a class pass 1 never saw are counted: one check, one device sync
        unseen = (~final.present[y]).sum()
        check = partial[:, NC1_SUM].sum() + partial[:, WITHIN].sum()
        if logits is not None:
            check = check + logits.sum()
        if not bool(torch.isfinite(check) & (unseen == 0)):
            if int(unseen):
                absent = sorted(set(y[~final.present[y]].tolist()))
                raise ValueError(
                    f"pass 2 has samples of class(es) {absent} that pass 1 did not see: both "
                    "passes must see the same data"
                )
            raise ValueError(
                "logits contain NaN or inf values"
                if logits is not None and not bool(torch.isfinite(logits).all())
                else "features contain NaN or inf values"
            )
        second += partial

    def _add_block(
        self,
        partial: Tensor,
        spread: Tensor,
        within: Tensor,
        y: Tensor,
        logits: Tensor | None,
        use_weight: bool,
    ) -> None:
        """Add one block's per-row statistics to ``partial`` (C × PASS2_COLUMNS) by true class,
        from its rows' [U, R, W]ᵀ(h − μ_y) (``spread``) and ‖h − μ_y‖ (``within``).

        The work is k′-wide; adding the block at μ_y recovers Uᵀh, R̃ᵀh, Wh.
        """
        final = self._final
        assert final is not None
        _, cols = final.stacks[use_weight]
        out = spread + final.stack_at_means[use_weight][y]
        per_row = torch.zeros(y.shape[0], PASS2_COLUMNS, dtype=torch.float64, device=y.device)
        per_row[:, COUNT] = 1.0
        per_row[:, WITHIN] = within.square()
        # ‖Λ^{-1/2} Uᵀ(h − μ_y)‖² and the NCC scores β_c − 2⟨Uᵀh, Uᵀ(μ_c − g)⟩ as one product
        # each; min/max(...).indices take the first extreme, as argmin/argmax, at half the cost
        torch.mv(spread[:, cols["basis"]].square(), final.inverse, out=per_row[:, NC1_SUM])
        coords = out[:, cols["basis"]]  # Uᵀh
        nearest = torch.addmm(final.beta, coords, final.ncc_slopes).min(dim=1).indices
        per_row[:, SELF_CORRECT] = nearest == y
        prediction = None
        if logits is not None:
            prediction = logits.max(dim=1).indices
        elif use_weight:
            assert self._bias is not None
            prediction = (out[:, cols["weight"]] + self._bias).max(dim=1).indices
        if prediction is not None:
            per_row[:, MISMATCH] = prediction != nearest
            per_row[:, PREDICTED] = 1.0
        if final.ref_beta is not None:
            nearest_ref = torch.add(final.ref_beta, out[:, cols["ref"]], alpha=-2.0)
            nearest_ref = nearest_ref.min(dim=1).indices
            per_row[:, REF_CORRECT] = nearest_ref == y
            if prediction is not None:
                per_row[:, REF_MATCH] = prediction == nearest_ref
        partial.index_add_(0, y, per_row)


def _ncc_offsets(centred: Tensor, centre: Tensor) -> Tensor:
    """β_c = ‖μ_c − g‖² + 2⟨g, μ_c − g⟩: argmin_c ‖h − μ_c‖ = argmin_c β_c − 2⟨h, μ_c − g⟩."""
    return centred.square().sum(dim=1) + 2.0 * (centred @ centre)


def _same(a: Tensor | None, b: Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and torch.equal(a, b.to(a.device))
