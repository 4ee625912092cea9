"""Align tomography projections onto a common rotation axis, in every regime.

:func:`align_projections` is the one entry point. ``method="auto"`` looks
at the data (:func:`~xfct_bluesky.analysis.consistency.survey`) and picks:

* ``"pairwise"`` (:mod:`.pairwise`): every projection registered against its
  angular neighbours, all shifts solved jointly. The founding paper's
  method, on diagonal DPC where it exists: the best there is while
  neighbouring projections look alike (fine angles, a specimen whose
  features move a few px between neighbours);
* ``"matching"`` (:mod:`.refine`): a start that needs neither similar
  neighbours nor a reconstruction (the centre-of-mass sinusoid horizontally,
  the rows' mass vertically), then projection matching against the
  reprojection of the aligned stack, coarse to fine, each step kept only if
  it makes the stack more consistent. For sparse angles and wide specimens.

Every result carries its consistency: the reprojection error of the stack
before (no alignment) and after (:func:`~.consistency.reprojection_error`).
An alignment that leaves the stack less consistent than no alignment is not
applied (``Alignment.applied`` False, zero shifts, the computed shifts kept
in ``proposed``) and a warning says so with the figures; so do warnings for
a field that cuts the specimen and for neighbours too far apart to register.

Nothing is lost, nothing silent: a projection with no signal (constant, as
all zeros from a closed shutter or a beam dump) or that no registration can
place is left out, its shift NaN, listed in ``Alignment.excluded`` and
named in a warning (:func:`~xfct_bluesky.reconstruction.reconstruct_maps`
then leaves it out of the volume); its angular neighbours are registered
with each other instead. A limited angular range and repeated angles are
warned about (:func:`~.angles.angle_problems`).

Sign convention
---------------
``shifts[k]`` (dy, dx) in pixels moves projection ``k`` onto the common
axis: ``apply_shifts(stack, shifts)``. A projection recorded with the
specimen displaced by ``offset`` needs ``shift = -offset``. A horizontal
sinusoid ``a + b cos(theta) + c sin(theta)`` in the shifts, like the
stage's eccentricity, only moves the reconstructed object; it is removed
when comparing with truth (:func:`alignment_error`).

References
----------
Guizar-Sicairos, Thurman & Fienup (2008), Opt. Lett. 33, 156,
doi:10.1364/OL.33.000156.
Gursoy et al. (2017), Sci. Rep. 7, 11818, doi:10.1038/s41598-017-12141-9.
Hong et al., the founding paper (DPC for XRF tomography alignment).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .. import _warnings
from ..validate import one_of, real
from ..validate import shifts as check_shifts
from . import channels as ch
from . import consistency as cs
from .angles import angle_problems, angles_checked, check_angles, check_theta
from .center import check_parity, mirror_center
from .exceptions import AlignmentWarning
from .pairwise import NO_SIGNAL, pairwise_alignment
from .refine import default_levels, refine_alignment
from .registration import is_blank
from .shifts import apply_shifts, fit_sinusoid, remove_sinusoid

__all__ = [
    "METHODS", "Alignment", "AlignmentWarning", "align_projections", "alignment_consistency", "alignment_error",
    "apply_shifts", "fit_sinusoid", "remove_sinusoid",
]

logger = logging.getLogger(__name__)


METHODS = ("auto", "pairwise", "matching")
#: Parallax (px) between angular neighbours above which pairwise registration is not trusted.
PARALLAX_MAX = 10.0
#: Median neighbour correlation below which neighbours are too unlike to register.
SIMILARITY_MIN = 0.5


@dataclass(frozen=True)
class Alignment:
    """Result of :func:`align_projections`.

    Attributes
    ----------
    shifts : (n, 2) array
        (dy, dx) in pixels that move each projection (input order) onto the
        common rotation axis: zeros when the alignment was not applied; NaN
        for the projections in ``excluded``.
    theta : (n,) array
        Angles (deg), input order.
    center : float
        Rotation axis column (px, 0-based) in the aligned projections (NaN
        when unknown).
    sinusoid : (3,) array
        Best-fit a + b cos(theta) + c sin(theta) of the horizontal shifts (px).
    pairs, measured, residuals, psr, used : arrays
        The pairwise registrations (input indices (i, j), measured s[j] - s[i],
        measured minus solved, peak-to-sidelobe ratio, kept after outlier
        rejection); empty for ``method="matching"``.
    method : str
        The method that ran: "pairwise" or "matching".
    channel : str
        The map it ran on ("dpc_diag", "fluorescence", "transmission", ...).
    reason : str
        Why that method and channel (the figures of the survey).
    consistency : dict
        ``before`` and ``after``: reprojection error (relative, low-passed) of
        the consistency channel (its name under ``channel``) with no shifts and
        with the proposed shifts; ``sigma_px`` and ``binning`` they were computed at.
    applied : bool
        False when the proposed shifts made the stack less consistent than no
        alignment: ``shifts`` are then zeros.
    proposed : (n, 2) array
        The shifts the method computed, applied or not.
    warnings : tuple of str
        Everything the alignment warned about (also issued as AlignmentWarning).
    survey : dict
        The regime figures (angular step, radius, parallax, neighbour
        similarity, edge signal, truncated angles).
    steps : (k, 2) array
        RMS correction (dy, dx) of each projection-matching iteration, px.
    excluded : dict of int to str
        The projections (input indices) left out of the alignment, each with
        the reason: no signal, or no registration that places it. Their
        shifts are NaN.
    """

    shifts: np.ndarray
    theta: np.ndarray
    center: float
    sinusoid: np.ndarray
    pairs: np.ndarray
    measured: np.ndarray
    residuals: np.ndarray
    psr: np.ndarray
    used: np.ndarray
    params: dict = field(default_factory=dict)
    method: str = "pairwise"
    channel: str = "projections"
    reason: str = ""
    consistency: dict = field(default_factory=dict)
    applied: bool = True
    proposed: np.ndarray | None = None
    warnings: tuple = ()
    survey: dict = field(default_factory=dict)
    steps: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    excluded: dict = field(default_factory=dict)

    @property
    def rms_residual(self) -> np.ndarray:
        """RMS of the kept registrations' residuals (dy, dx), px (pairwise), or the last correction (matching)."""
        if self.method == "matching":
            return self.steps[-1] if len(self.steps) else np.full(2, np.nan)
        r = self.residuals[self.used]
        return np.sqrt(np.mean(r**2, axis=0)) if len(r) else np.full(2, np.nan)

    def summary(self) -> dict:
        """The figures a person reads (and a derived run stores): method, channel, reason, consistency, warnings."""
        return {"method": self.method, "channel": self.channel, "reason": self.reason,
                "applied": bool(self.applied), "center": None if not np.isfinite(self.center) else float(self.center),
                "consistency": dict(self.consistency),
                "rms_residual_px": [None if not np.isfinite(v) else round(float(v), 4) for v in self.rms_residual],
                "warnings": list(self.warnings), "survey": dict(self.survey),
                "excluded": [{"projection": int(k), "theta": float(self.theta[k]), "reason": why}
                             for k, why in self.excluded.items()]}


def _check_stack(stack, theta, name="projections"):
    """(real (n, ny, nx) stack, float64 (n,) theta), else ValueError naming what is wrong."""
    stack = real(name, stack)
    if stack.ndim != 3:
        raise ValueError(f"{name} must be a 3D (n_angles, ny, nx) stack; got shape {stack.shape}")
    theta = check_theta(theta, stack.shape[0])
    if not np.all(np.isfinite(stack)):
        raise ValueError(f"{name} contain NaN or infinity; replace them (e.g. by 0) before aligning")
    return stack, theta


def _as_maps(projections, channel):
    """(maps dict, the name a bare array goes by)."""
    if isinstance(projections, Mapping):
        if not projections:
            raise ValueError("projections is an empty mapping; give {name: (n, ny, nx) stack}")
        return {str(k): np.asarray(v) for k, v in projections.items()}, None
    name = channel if isinstance(channel, str) else "projections"
    return {name: np.asarray(projections)}, name


def align_projections(
    projections,
    theta,
    *,
    method: str = "auto",
    channel: str | None = None,
    force: bool = False,
    upsample: int = 20,
    max_separation: int = 16,
    max_angle: float = 12.0,
    roi=None,
    normalization=None,
    window: str | None = "tukey",
    outlier_threshold: float = 6.0,
    find_center: bool = True,
    center_maps=None,
    center_parity: int = 1,
    iterations: int = 10,
    tolerance: float = 0.02,
) -> Alignment:
    """Align a tomography's projections onto a common rotation axis.

    Parameters
    ----------
    projections : (n, ny, nx) array, or mapping of name to (n, ny, nx) arrays
        One map per angle. A mapping (e.g. every map of a run, keyed by data
        key) lets ``auto`` choose the channel: diagonal DPC for pairwise
        registration, and the most informative consistent channel
        (:mod:`~xfct_bluesky.analysis.channels`: summed fluorescence corrected
        for dead time and I0, transmission as -log, DPC y) for matching and
        for the consistency figures.
    theta : (n,) array
        Angles (deg), any order (sequential, interlaced, golden).
    method : {"auto", "pairwise", "matching"}
        ``auto`` surveys the data and picks (the choice and its reason are
        logged and kept in the result): ``matching`` when the parallax
        between neighbours (specimen radius x angular step) exceeds
        ``PARALLAX_MAX`` px or neighbours correlate below ``SIMILARITY_MIN``,
        ``pairwise`` otherwise and whenever the field cuts the specimen.
    channel : str, optional
        The map to align on (a key or its ending, "fluorescence" or
        "transmission"); for a bare array, its name ("dpc_diag", "Zn", ...),
        which tells how to treat it. Default: chosen as above.
    force : bool
        Apply the shifts even when they leave the stack less consistent
        than no alignment (default: they are not applied, with a warning).
    upsample, max_separation, max_angle, roi, normalization, window, outlier_threshold
        Pairwise registration options (:func:`~.pairwise.pairwise_alignment`):
        precision 1/upsample px; separations 1, 2, 4, ... up to
        ``max_separation`` steps and ``max_angle`` deg; region; None or
        "phase"; taper ("tukey", "hann", None: without one smooth backgrounds
        drag shifts toward zero); residual threshold in robust sigmas.
    find_center : bool
        Pairwise: estimate the rotation axis from the pairs 180 degrees apart.
    center_maps : (n, ny, nx) array, optional
        Pairwise: maps to estimate the axis with (default the registered
        ones). For DPC give the DPC x maps with ``center_parity=-1`` (a mapping
        with a ``dpc_x`` map does this by itself).
    center_parity : {1, -1}
        1 for maps that mirror (fluorescence, transmission, phase), -1 for
        d/dx maps (DPC x).
    iterations : int
        Matching: at most this many iterations per level.
    tolerance : float
        Matching: a level is done when the RMS correction is below this (px).

    Returns
    -------
    Alignment
        With ``method``, ``channel``, ``reason``, ``consistency``,
        ``applied``, ``proposed`` and ``warnings``.

    Notes
    -----
    Reading the consistency figures: ``before`` is the reprojection error of
    the unaligned stack, ``after`` of the aligned one; a good alignment
    lowers it (a few percent of the signal is the floor set by noise and
    the number of angles). The figures compare alignments of one dataset,
    not datasets with each other.
    """
    one_of("method", method, METHODS)
    maps, bare = _as_maps(projections, channel)
    shapes = {k: v.shape for k, v in maps.items()}
    first = next(iter(maps.values()))
    for key, arr in maps.items():
        _check_stack(arr, theta, "projections" if bare else f"map {key!r}")
        if arr.shape[:1] != first.shape[:1] or (arr.ndim == 3 and arr.shape[1:] != first.shape[1:]):
            raise ValueError(f"the maps differ in shape ({shapes}); give one (n, ny, nx) stack per map")
    stack0, theta = _check_stack(first, theta)
    angle_problems(theta)  # angles from one direction only: refused before any work
    check_parity("center_parity", center_parity)
    if center_maps is not None and np.asarray(center_maps).shape != stack0.shape:
        raise ValueError(f"center_maps has shape {np.asarray(center_maps).shape}; expected the projections' "
                         f"{stack0.shape}")
    notes: list[str] = []

    def warn(text):
        notes.append(text)
        _warnings.warn(text, AlignmentWarning, stacklevel=3)

    chosen, cons = ch.choose(maps, channel if bare is None else bare)
    reg = chosen
    if reg is None:
        diag = ch.find_map(maps, "dpc_diag") if channel is None else None
        reg = ch.prepare(diag, maps) if diag else cons
    theta_all = theta
    keep = np.flatnonzero(~(is_blank(cons.stack) | is_blank(reg.stack, roi=roi)))
    if keep.size < theta.size:  # no signal: left out, and their neighbours registered with each other
        if keep.size < 2:
            raise ValueError(f"{theta.size - keep.size} of the {theta.size} projections have no signal (constant "
                             f"in {cons.name} or {reg.name}: a closed shutter or a beam dump?); allowed: at least "
                             "2 projections with signal. Check the beam and the shutter, and re-measure")
        maps, theta = {k: v[keep] for k, v in maps.items()}, theta[keep]
        cons, reg = _subset(cons, keep), (cons if reg is cons else _subset(reg, keep))
        center_maps = None if center_maps is None else np.asarray(center_maps)[keep]
    notes.extend(check_angles(theta, AlignmentWarning, "the alignment", stacklevel=3))
    whole = cons.consistent
    com, sv = _survey(cons, theta)
    if sv.truncated:
        worst = int(np.argmax(sv.edge))
        warn(f"the field cuts the specimen at {sv.truncated_angles} of {theta.size} angles (signal at the "
             f"field's edges up to {sv.edge.max():.1%} of the projection's peak, at theta={theta[worst]:.1f} deg): "
             "no alignment is exact on truncated projections; scan a field that holds the whole specimen "
             "at every angle")
        com = None
    method, why = _choose_method(method, sv, cons)
    # a noisy DPC map correlates poorly with its neighbours yet registers well (a sharp peak): its
    # similarity says nothing; a line integral's does
    if method == "pairwise" and (sv.parallax > PARALLAX_MAX or (whole and sv.similarity < SIMILARITY_MIN)):
        warn(f"neighbouring projections are too far apart for pairwise registration: a feature at the "
             f"specimen's radius ({sv.radius:.0f} px) moves {sv.parallax:.1f} px between neighbours "
             f"{sv.step:.2f} deg apart (limit {PARALLAX_MAX:g}), neighbour correlation {sv.similarity:.2f}; "
             "use method='matching' (or more angles)")
    if method == "matching" and not whole:
        raise ValueError(f"method='matching' needs a consistent channel (fluorescence, transmission, absorption); "
                         f"{cons.name!r} is {cons.kind}: pass the run's maps as a mapping or name the channel")
    empty = np.zeros((0, 2))
    pairs, measured, residuals, psr, used = np.zeros((0, 2), int), empty, empty, np.zeros(0), np.zeros(0, bool)
    steps, matching, unplaced = empty, {}, {}
    if method == "pairwise":
        sol = pairwise_alignment(reg.stack, theta, upsample=upsample, max_separation=max_separation,
                                 max_angle=max_angle, roi=roi, normalization=normalization, window=window,
                                 outlier_threshold=outlier_threshold)
        used_name, proposed = reg.name, sol.shifts
        pairs, measured, residuals, psr, used = sol.pairs, sol.measured, sol.residuals, sol.psr, sol.used
        unplaced = sol.excluded
        if np.isfinite(proposed[:, 0]).sum() < 2:
            raise ValueError(f"no two of the {theta.size} projections could be registered with each other on "
                             f"{used_name} ({len(unplaced)} left out: {next(iter(unplaced.values()), '')}); "
                             "try method='matching', another channel, or more angles")
        center = float("nan")
        if find_center:
            cmaps, parity = center_maps, center_parity
            dpc_x = ch.find_map(maps, "dpc_x") if bare is None else None
            if cmaps is None and used_name.endswith("dpc_diag") and dpc_x is not None:
                cmaps, parity = maps[dpc_x], -1
            cmaps = reg.stack if cmaps is None else np.asarray(cmaps)
            center = _aligned_mirror_center(cmaps, theta, proposed, parity)
    else:
        used_name = cons.name
        with angles_checked():  # warned above
            ref, sigma = _matching(cons, theta, com, sv, iterations=iterations, tolerance=tolerance,
                                   upsample=upsample)
        proposed, steps, center = ref.shifts, ref.steps, ref.center
        matching = {"converged": bool(ref.converged), "levels": [int(b) for b in ref.levels], "sigma": sigma}
    reason = f"{method} on {used_name}: {why}"
    if cons.name != used_name:
        reason += f"; consistency measured on {cons.name}"
    logger.info("alignment: %s", reason)
    placed = np.isfinite(proposed).all(axis=1)
    if placed.all():
        consistency = cs.consistency_figures(cons, theta, proposed, center, sv, com)
    else:  # measured on the projections the alignment placed
        sub_com = None if com is None else dataclasses.replace(com, dx=com.dx[placed], measured=com.measured[placed])
        consistency = cs.consistency_figures(_subset(cons, placed), theta[placed], proposed[placed], center, sv,
                                             sub_com)
    applied = _verdict(consistency, sv, theta.size, proposed[placed], method, used_name, force, warn,
                       field=stack0.shape[1:])
    shifts = np.where(placed[:, None], proposed if applied else 0.0, np.nan)
    excluded = {k: NO_SIGNAL for k in np.setdiff1d(np.arange(theta_all.size), keep).tolist()}
    excluded.update({int(keep[k]): why for k, why in unplaced.items()})
    excluded = dict(sorted(excluded.items()))
    if excluded:
        listed = "; ".join(f"{k} (theta={theta_all[k]:.2f} deg): {why}" for k, why in list(excluded.items())[:8])
        more = f"; and {len(excluded) - 8} more" if len(excluded) > 8 else ""
        warn(f"{len(excluded)} of the {theta_all.size} projections are left out of the alignment, their shifts "
             f"NaN (Alignment.excluded): projection {listed}{more}. reconstruct_tomo leaves them out of the volume; "
             "re-measure those angles, or drop them")
    full, proposed_full = np.full((theta_all.size, 2), np.nan), np.full((theta_all.size, 2), np.nan)
    full[keep], proposed_full[keep] = shifts, proposed
    return Alignment(full, theta_all, float(center), fit_sinusoid(full[:, 1], theta_all), keep[pairs], measured,
                     residuals, psr, used,
                     params={"upsample": upsample, "max_separation": max_separation, "max_angle": max_angle,
                             "normalization": normalization, "window": window, **matching},
                     method=method, channel=used_name, reason=reason, consistency=consistency, applied=applied,
                     proposed=proposed_full, warnings=tuple(notes), survey=sv.as_dict(), steps=steps,
                     excluded=excluded)


def _aligned_mirror_center(stack, theta, shifts, parity) -> float:
    """The axis column of ``stack`` shifted by ``shifts`` (:func:`~.center.mirror_center`), from the pairs
    within 1.5 angular steps (at least 0.5 deg) of 180 apart; NaN when there is none."""
    ok = np.isfinite(shifts).all(axis=1)  # projections the alignment left out (NaN) have no place
    theta = theta[ok]
    tolerance = max(1.5 * 180.0 / theta.size, 0.5)
    return mirror_center(apply_shifts(stack[ok], shifts[ok]), theta, tolerance=tolerance, parity=parity)


def _subset(channel, index):
    """The channel with only the projections ``index`` (indices or a boolean mask)."""
    return dataclasses.replace(channel, stack=channel.stack[index])


def alignment_consistency(projections, theta, shifts, *, channel: str | None = None) -> dict:
    """The consistency figures (``Alignment.consistency``) of given ``shifts``, e.g. a live estimate's.

    The channel is chosen as :func:`align_projections` chooses it (or
    ``channel``); ``before`` is the unaligned stack, ``after`` the stack
    shifted by ``shifts``.
    """
    maps, bare = _as_maps(projections, channel)
    first = next(iter(maps.values()))
    _, theta = _check_stack(first, theta)
    shifts = check_shifts(shifts, theta.size, excluded_ok=True)
    placed = np.isfinite(shifts[:, 0])  # NaN: a projection the alignment left out, measured without it
    if not placed.all():
        maps, theta, shifts = {k: np.asarray(v)[placed] for k, v in maps.items()}, theta[placed], shifts[placed]
    _, cons = ch.choose(maps, channel if bare is None else bare)
    com, sv = _survey(cons, theta)
    return cs.consistency_figures(cons, theta, shifts, float("nan"), sv, None if sv.truncated else com)


def _survey(cons, theta):
    """(centre of mass or None, survey) of a channel: the centre of mass only for a line integral with signal."""
    whole = cons.consistent
    com = cs.com_alignment(cons.stack, theta) if whole and np.all(cons.stack.sum(axis=(1, 2)) > 0) else None
    return com, cs.survey(cons.stack, theta, com.center if com else None, signed=not whole)


def _choose_method(method, sv, cons) -> tuple[str, str]:
    """(method, why) for ``method="auto"`` from the survey; an explicit method is kept."""
    if method != "auto":
        return method, "asked for"
    if not cons.consistent:
        return "pairwise", (f"{cons.name} is a {cons.kind} map (not a line integral), so only pairwise "
                            "registration applies")
    if sv.truncated:
        return "pairwise", "the field cuts the specimen, so neither its centre of mass nor a reprojection is whole"
    if sv.parallax > PARALLAX_MAX or sv.similarity < SIMILARITY_MIN:
        return "matching", (f"neighbouring projections are too far apart for pairwise registration (parallax "
                            f"{sv.parallax:.1f} px > {PARALLAX_MAX:g} at a step of {sv.step:.2f} deg and radius "
                            f"{sv.radius:.0f} px, neighbour correlation {sv.similarity:.2f})")
    return "pairwise", (f"fine angles: parallax {sv.parallax:.1f} px at a step of {sv.step:.2f} deg, "
                        f"neighbour correlation {sv.similarity:.2f}")


def _matching(cons, theta, com, sv, *, iterations, tolerance, upsample):
    """Start from the centre of mass (x) and the rows' mass (y), then guarded projection matching."""
    nx = cons.stack.shape[2]
    dy = cs.vertical_from_profiles(cons.stack)
    start = np.stack([dy, com.dx if com else np.zeros(theta.size)], axis=1)
    sigma = cs.default_sigma(nx, 2 * sv.radius, sv.n_distinct)
    ref = refine_alignment(cons.stack, theta, start, center=com.center if com else None, iterations=iterations,
                           sigma=sigma, tolerance=tolerance, upsample=upsample,
                           levels=default_levels(nx, start_known=com is not None), support=cs.support_radius(sv),
                           guard=True)
    return ref, sigma


def _verdict(consistency, sv, n, proposed, method, name, force, warn, *, field) -> bool:
    """Whether to apply ``proposed``: not when it makes the stack less consistent, nor when it cannot be checked,
    nor when it would move a projection by half the field or more (the specimen, whole in the field, cannot
    have been there: such shifts are the alignment's failure, not the stage's runout)."""
    before, after = consistency.get("before"), consistency.get("after")
    rms = np.sqrt(np.mean(np.asarray(proposed) ** 2, axis=0)).round(2).tolist()
    largest = np.abs(np.asarray(proposed, float)).max(axis=0) if len(proposed) else np.zeros(2)
    limit = np.asarray(field, float) / 2
    if np.any(largest >= limit) and not force:
        warn(f"the {method} alignment on {name} was not applied: it would shift a projection by "
             f"{largest[0]:.1f} px (y) and {largest[1]:.1f} px (x), half the {field[0]} x {field[1]} px field or "
             f"more (RMS {rms} px; reprojection error {after} against {before} unaligned). Try another channel "
             "(DPC, if the run has it) or method, or force=True")
        return False
    if sv.truncated_angles > n / 2 and not force:  # cut at most angles: nothing to check against
        warn(f"the {method} alignment on {name} was not applied: the field cuts the specimen at most angles, so "
             f"its consistency cannot be checked (reprojection error {after} against {before} unaligned, not "
             f"meaningful on truncated projections; RMS of the proposed shifts {rms} px). Scan a field that holds "
             "the whole specimen, or pass force=True to apply them")
        return False
    if before is None or after is None or after <= before:
        return True
    if force:
        warn(f"the {method} alignment on {name} leaves the stack less consistent than no alignment "
             f"(reprojection error {after:.4f} against {before:.4f} unaligned); applied anyway (force=True)")
        return True
    warn(f"the {method} alignment on {name} was not applied: it leaves the stack less consistent than no "
         f"alignment (reprojection error {after:.4f} against {before:.4f} unaligned; RMS of the proposed shifts "
         f"{rms} px). Try {'a field that holds the whole specimen' if sv.truncated else 'another method or channel'}, "
         "or force=True")
    return False


def alignment_error(shifts, theta, true_offsets) -> np.ndarray:
    """RMS error (dy, dx) in px of ``shifts`` (at angles ``theta``, degrees) against ``-true_offsets``.

    Horizontally the best-fit sinusoid a + b cos + c sin of the difference is
    removed, vertically its mean: these only move the reconstructed object.
    """
    diff = np.asarray(shifts, float) + np.asarray(true_offsets, float)
    dy = diff[:, 0] - diff[:, 0].mean()
    dx = remove_sinusoid(diff[:, 1], theta)
    return np.sqrt([np.mean(dy**2), np.mean(dx**2)])
