"""Nothing lost, nothing silent in the analysis (issue 12, item 4).

* NaN and infinite shifts are refused naming the projection (before: a NaN
  shift turned the projection into zeros, and ``reconstruct_tomo(shifts=NaN)``
  gave a volume of zeros);
* a projection without signal (a closed shutter, a beam dump) or without a
  real correlation peak is left out of the alignment, its shift NaN, named in
  a warning, and left out of the reconstruction (before: ``register(zeros,
  zeros).shift == [-1.1, -1.1]``, and two blank projections among 48 moved
  the others from 0.04/0.05 px to 0.52/0.70 px RMS error);
* a limited angular range and repeated angles are warned about with the
  consequence, angles from one direction refused;
* negative counts (DPC segments, MLEM, integer maps given to MLEM) and
  complex input are refused naming the array, the value and its index;
  fitted (float) maps clipped for MLEM are warned about.

Small simulated tomographies (48 golden angles of 32 x 32 px, 3 ms DPC, about 1 s).
"""

from __future__ import annotations

import event_model
import numpy as np
import pytest

from xfct_bluesky.analysis import tomo
from xfct_bluesky.analysis.align import (
    AlignmentWarning,
    align_projections,
    alignment_consistency,
    alignment_error,
    apply_shifts,
)
from xfct_bluesky.analysis.dpc import difference_over_sum, dpc_from_segments
from xfct_bluesky.analysis.pairwise import pairwise_alignment
from xfct_bluesky.analysis.refine import refine_alignment
from xfct_bluesky.analysis.registration import is_blank, register
from xfct_bluesky.analysis.tomo import ReconstructionWarning
from xfct_bluesky.callbacks.alignment import LiveDPCAlignment
from xfct_bluesky.physics import MicroprobeSimulator, RunoutModel, small_cell
from xfct_bluesky.plans import tomo_angles
from xfct_bluesky.reconstruction import reconstruct_maps

N, SHAPE, BLANK = 48, (32, 32), (7, 30)


@pytest.fixture(scope="module")
def tomography():
    """(theta, maps with signal everywhere, the same with BLANK taken with the shutter closed, true offsets)."""
    sim = MicroprobeSimulator(small_cell(5e-6, seed=1), runout=RunoutModel(eccentricity=1e-6, seed=1), seed=1)
    theta = tomo_angles(N, 180, "golden")
    maps = [sim.simulate_map(SHAPE, 300e-9, 3e-3, t, spectra=False).maps for t in theta]
    closed = sim.simulate_map(SHAPE, 300e-9, 3e-3, 0.0, spectra=False, record=False, beam_on=False).maps
    keys = ("dpc_diag", "dpc_x", "dpc_y", "transmission", "i0", "live_time", "Zn", "Fe")
    clean = {k: np.stack([m[k] for m in maps]) for k in keys}
    blanked = {k: v.copy() for k, v in clean.items()}
    for k in keys:
        blanked[k][list(BLANK)] = closed[k]
    return theta, clean, blanked, sim.truth.offsets


def _good():
    return np.setdiff1d(np.arange(N), BLANK)


# ------------------------------------------------------------------ blank projections
def test_register_gives_no_shift_without_signal():
    rng = np.random.default_rng(0)
    texture = rng.random((16, 16))
    zeros = register(np.zeros((16, 16)), np.zeros((16, 16)))
    assert not zeros.valid and np.all(np.isnan(zeros.shift)) and zeros.peak == 0  # was [-1.1, -1.1]
    assert zeros.reason == "reference and moving have no signal (constant in the registered region)"
    one = register(np.full((16, 16), 3.0), texture)
    assert not one.valid and one.reason.startswith("reference has no signal")
    stack = register(texture, np.stack([texture, np.zeros((16, 16)), np.roll(texture, 2, axis=1)]))
    np.testing.assert_array_equal(stack.valid, [True, False, True])
    assert np.isnan(stack.shift[1]).all() and np.allclose(stack.shift[2], [0, -2], atol=0.05)
    assert stack.reason == ("", "moving has no signal (constant in the registered region)", "")
    assert register(texture, texture).valid is True
    np.testing.assert_array_equal(is_blank(np.stack([texture, np.zeros((16, 16)), np.full((16, 16), 7.0)])),
                                  [False, True, True])
    assert not is_blank(1.0 + 1e-3 * texture)  # faint contrast is signal


def test_blank_projections_are_left_out_and_do_not_misalign_the_others(tomography):
    theta, clean, blanked, truth = tomography
    good = _good()
    reference = align_projections(clean, theta)
    before = alignment_error(reference.shifts[good], theta[good], truth[good])
    with pytest.warns(AlignmentWarning) as record:
        al = align_projections(blanked, theta)
    after = alignment_error(al.shifts[good], theta[good], truth[good])
    # measured: 0.043 / 0.050 px without the blanks, 0.040 / 0.050 px with them (0.52 / 0.70 before this fix)
    assert np.all(before < 0.08) and np.all(after < 0.08), (before, after)
    assert np.all(np.abs(after - before) < 0.01), (before, after)
    assert np.isnan(al.shifts[list(BLANK)]).all() and np.isfinite(al.shifts[good]).all()
    assert list(al.excluded) == list(BLANK) and all("no signal" in why for why in al.excluded.values())
    assert al.method == "pairwise" and al.channel == "dpc_diag" and al.applied
    text = " ".join(str(w.message) for w in record)
    assert "2 of the 48 projections are left out of the alignment, their shifts NaN" in text
    assert f"projection 7 (theta={theta[7]:.2f} deg): no signal" in text and f"30 (theta={theta[30]:.2f} deg)" in text
    assert any("left out" in w for w in al.warnings)
    summary = al.summary()["excluded"]
    assert [e["projection"] for e in summary] == list(BLANK) and summary[0]["theta"] == pytest.approx(theta[7])
    # the consistency figures are those of the projections placed: better aligned than not
    assert al.consistency["after"] < al.consistency["before"]


def test_a_projection_without_a_real_peak_is_left_out(tomography):
    theta, clean, _, truth = tomography
    good = _good()
    dpc = clean["dpc_diag"].copy()
    rng = np.random.default_rng(3)
    dpc[list(BLANK)] = rng.normal(0, 5 * dpc.std(), (len(BLANK), *SHAPE))  # noise: a detector gone wrong
    sol = pairwise_alignment(dpc, theta)
    assert sorted(sol.excluded) == list(BLANK)
    assert all("no real correlation peak" in why for why in sol.excluded.values())
    assert np.isnan(sol.shifts[list(BLANK)]).all()
    err = alignment_error(sol.shifts[good], theta[good], truth[good])
    assert np.all(err < 0.08), err  # measured 0.040 / 0.049 px


def test_reconstruction_leaves_blank_projections_out(tomography):
    theta, _, blanked, _ = tomography
    with pytest.warns(ReconstructionWarning, match="2 of the 48 projections are left out of the reconstruction") \
            as record:
        rec = reconstruct_maps(blanked, theta, elements=("Zn",), algorithm="fbp")
    assert len(record) == 1 and f"projection 7 (theta={theta[7]:.2f} deg): no signal" in str(record[0].message)
    assert rec.excluded == BLANK and rec.theta.size == N - 2 and rec.shifts.shape == (N - 2, 2)
    assert np.isfinite(rec.shifts).all() and all(np.isfinite(v).all() for v in rec.volumes.values())
    assert rec.volumes["Zn"].max() > 0  # not the volume of zeros NaN shifts gave


# ------------------------------------------------------------------ NaN and inf shifts
def test_nan_and_inf_shifts_are_refused_naming_the_projection(tomography):
    theta, clean, _, _ = tomography
    stack = clean["Zn"][:4].astype(np.float32)
    shifts = np.zeros((4, 2))
    shifts[2] = [np.nan, 0.0]
    with pytest.raises(ValueError, match=r"shifts are not finite at 1 of 4 projections \(projection 2: \(nan, 0\)\)"):
        apply_shifts(stack, shifts)  # was: projection 2 silently all zeros
    shifts[2] = [0.0, np.inf]
    with pytest.raises(ValueError, match=r"projection 2: \(0, inf\).*allowed: finite \(dy, dx\) px"):
        apply_shifts(stack, shifts)
    with pytest.raises(ValueError, match=r"start shifts are not finite at 1 of 48 projections \(projection 5: "):
        refine_alignment(clean["dpc_y"], theta, np.where(np.arange(N)[:, None] == 5, np.nan, np.zeros((N, 2))))
    with pytest.raises(ValueError, match=r"shifts are not finite at 48 of 48 projections \(projection 0: \(nan, nan\), "
                                         r"projection 1: .* and 43 more\)"):
        reconstruct_maps(clean, theta, elements=("Zn",), algorithm="fbp", shifts=np.full((N, 2), np.nan))
    with pytest.raises(ValueError, match=r"projection 3: \(inf, 0\)"):
        alignment_consistency(clean, theta, np.where(np.arange(N)[:, None] == 3, [np.inf, 0.0], np.zeros((N, 2))))


def test_nan_shifts_given_to_the_reconstruction_leave_those_projections_out(tomography):
    theta, clean, _, _ = tomography
    shifts = np.zeros((N, 2))
    shifts[11] = np.nan  # as an alignment marks a projection it left out
    with pytest.warns(ReconstructionWarning, match=r"projection 11 \(theta=.*\): its shift is NaN"):
        rec = reconstruct_maps(clean, theta, elements=("Zn",), algorithm="fbp", shifts=shifts, phase=False)
    assert rec.excluded == (11,) and rec.theta.size == N - 1


# ------------------------------------------------------------------ angles
def test_limited_angular_range_is_warned_once_with_the_consequence(tomography):
    _, clean, _, _ = tomography
    theta = np.linspace(0, 45, 24)
    stacks = {k: v[:24] for k, v in clean.items()}
    with pytest.warns(ReconstructionWarning, match="FBP: the angles cover only 45 of the 180 degrees") as record:
        tomo.fbp(stacks["Zn"].astype(np.float32), theta)
    assert len(record) == 1 and "133-degree missing wedge: features are elongated" in str(record[0].message)
    with pytest.warns(ReconstructionWarning) as record:
        reconstruct_maps(stacks, theta, elements=("Zn", "Fe"), algorithm="sirt", iterations=2, align="none")
    assert [str(w.message)[:44] for w in record] == ["the reconstruction: the angles cover only 45"]  # once
    with pytest.warns(AlignmentWarning, match="the alignment: the angles cover only 45 of the 180 degrees"):
        align_projections(stacks["dpc_diag"], theta)


def test_repeated_angles_are_warned_and_one_direction_refused(tomography):
    theta, clean, _, _ = tomography
    theta = theta.copy()
    theta[5] = theta[17]  # projection 17 measured again in place of 5
    dpc = clean["dpc_diag"].copy()
    dpc[5] = dpc[17]
    zn = clean["Zn"].astype(np.float32)
    with pytest.warns(ReconstructionWarning, match=r"1 of the 48 angles repeat another \(.* at projections 5, 17\): "
                                                   "a repeated direction counts twice"):
        tomo.mlem(zn, theta, iterations=1)
    with pytest.warns(AlignmentWarning, match="projections 5, 17") as record:
        al = align_projections(dpc, theta)
    assert len(record) == 1 and not al.excluded and al.applied
    zn = zn[:24]
    same = np.full(24, 30.0)
    same[::2] = 210.0  # 180 degrees apart: the same lines, mirrored
    for call in (lambda: tomo.fbp(zn, same), lambda: align_projections(clean["dpc_diag"][:24], same),
                 lambda: reconstruct_maps({k: v[:24] for k, v in clean.items()}, same, align="none")):
        with pytest.raises(ValueError, match=r"the 24 angles are all one direction \(30 deg modulo 180; "
                                             r"theta\[0\] = 210 deg\).*at least 2 distinct angles"):
            call()


# ------------------------------------------------------------------ negative counts, complex input
def test_negative_counts_are_refused_naming_the_array_and_index(tomography):
    theta, clean, _, _ = tomography
    q = np.ones((3, 4))
    bad = q.copy()
    bad[1, 2] = -3
    with pytest.raises(ValueError, match=r"q2 has negative values \(1 of them\), the lowest -3 at index \(1, 2\); "
                                         r"allowed: values >= 0"):
        dpc_from_segments(q, bad, q, q)  # was: accepted, DPC beyond [-1, 1]
    with pytest.raises(ValueError, match=r"q3 has 3 NaN or infinite count\(s\), the first at index \(0, 1\)"):
        dpc_from_segments(q, q, np.where(np.arange(4) == 1, np.nan, q), q)  # column 1
    zn = clean["Zn"].astype(np.float32)
    zn[4, 10, 12] = -2
    with pytest.raises(ValueError, match=r"projections has negative values \(1 of them\), the lowest -2 at index "
                                         r"\(4, 10, 12\).*np\.clip"):
        tomo.mlem(zn, theta, iterations=1)
    counts = clean["Zn"].astype(np.int32)
    counts[4, 10, 12] = -2
    with pytest.raises(ValueError, match=r"map 'Zn' has negative values \(1 of them\), the lowest -2 at index "
                                         r"\(4, 10, 12\); allowed: values >= 0"):
        reconstruct_maps({**clean, "Zn": counts}, theta, elements=("Zn",), algorithm="mlem", align="none")
    # fitted (float) maps can dip below zero: MLEM clips them, and says so
    with pytest.warns(ReconstructionWarning, match=r"map 'Zn' has negative values \(1 of them\), the lowest -2 at "
                                                   r"index \(4, 10, 12\): MLEM models photon counts, so they are set "
                                                   "to 0"):
        reconstruct_maps({**clean, "Zn": zn}, theta, elements=("Zn",), algorithm="mlem", iterations=1, align="none",
                         phase=False)
    # DPC is signed: negative values are data
    assert align_projections(clean["dpc_diag"], theta).applied


def test_complex_input_is_refused_naming_the_argument(tomography):
    theta, clean, _, _ = tomography
    z = clean["dpc_diag"] + 1j
    for call, name in [(lambda: apply_shifts(z, np.zeros((N, 2))), "stack"),
                       (lambda: apply_shifts(clean["Zn"], np.zeros((N, 2)) + 0j), "shifts"),
                       (lambda: align_projections(z, theta), "projections"),
                       (lambda: align_projections({**clean, "dpc_x": z}, theta), "map 'dpc_x'"),
                       (lambda: difference_over_sum(z, z), "a"),
                       (lambda: reconstruct_maps({**clean, "Zn": z}, theta, align="none"), "map 'Zn'"),
                       (lambda: reconstruct_maps(clean, theta + 0j, align="none"), "theta")]:
        with pytest.raises(ValueError, match=rf"^{name} is complex \(complex(64|128)\); allowed: real numbers"):
            call()


# ------------------------------------------------------------------ the live alignment
def test_live_alignment_leaves_blank_projections_out(tomography):
    theta, _, blanked, truth = tomography
    good = _good()
    live = LiveDPCAlignment()
    bundle = event_model.compose_run(metadata={"n_angles": len(theta)})
    live("start", bundle.start_doc)
    keys = {"m_dpc_diag": {"dtype": "array", "shape": list(SHAPE), "source": "sim"},
            "m_Zn": {"dtype": "array", "shape": list(SHAPE), "source": "sim"},
            "m_rotation": {"dtype": "number", "shape": [], "source": "sim"}}
    desc = bundle.compose_descriptor(name="primary", data_keys=keys)
    live("descriptor", desc.descriptor_doc)
    for k, t in enumerate(theta):
        data = {"m_dpc_diag": blanked["dpc_diag"][k], "m_Zn": blanked["Zn"][k], "m_rotation": float(t)}
        live("event", desc.compose_event(data=data, timestamps=dict.fromkeys(data, 0.0)))
    live("stop", bundle.compose_stop())
    assert live.wait(60)  # the worker has aligned it
    assert live.errors == []
    # the live estimate: the blank projections have no shift, the others are registered past them
    assert np.isnan(live.shifts[list(BLANK)]).all() and np.isfinite(live.shifts[good]).all()
    assert np.all(alignment_error(live.shifts[good], theta[good], truth[good]) < 0.1)
    result = live.results[bundle.start_doc["uid"]]
    assert np.isnan(result["shifts"][list(BLANK)]).all()
    assert [e["projection"] for e in result["summary"]["excluded"]] == list(BLANK)
    assert any("left out of the alignment" in w for w in result["summary"]["warnings"])
    assert np.all(alignment_error(result["shifts"][good], theta[good], truth[good]) < 0.08)


def test_live_preview_leaves_out_a_projection_without_a_live_shift():
    """A blank projection's shift is NaN: the preview is made of the others, no error."""
    from xfct_bluesky.analysis import tomo
    from xfct_bluesky.callbacks.reconstruction import preview_slice

    rng = np.random.default_rng(0)
    theta = np.linspace(0, 180, 12, endpoint=False)
    stack = rng.poisson(5, (12, 8, 16)).astype(float)
    shifts = np.zeros((12, 2))
    shifts[3] = np.nan
    stack[3] = 0  # the closed shutter
    preview = preview_slice(stack, theta, shifts=shifts)
    assert preview.shape == (16, 16) and np.isfinite(preview).all()
    keep = np.arange(12) != 3
    np.testing.assert_allclose(preview, tomo.fbp(stack[keep, 4], theta[keep], filter="shepp-logan"),
                               rtol=1e-4, atol=1e-4)
    # without shifts (the live preview): every projection, the central row
    np.testing.assert_allclose(preview_slice(stack, theta), tomo.fbp(stack[:, 4], theta, filter="shepp-logan"),
                               rtol=1e-4, atol=1e-4)
    assert preview_slice(stack[:1], theta[:1]) is None  # one projection: nothing to show yet


@pytest.mark.parametrize("elements, match", [("Zn", r"elements='Zn' is one string.*elements=\('Zn',\)"),
                                             ((), r"allowed one or more element symbols"),
                                             (("Zn", 3), r"allowed one or more element symbols")])
def test_elements_must_be_a_list_of_symbols(elements, match):
    """``elements='Zn'`` was iterated letter by letter ("element 'Z' has no map")."""
    from xfct_bluesky.callbacks.reconstruction import LiveReconstruction
    from xfct_bluesky.reconstruction import reconstruct_maps

    theta = np.linspace(0, 180, 8, endpoint=False)
    with pytest.raises((TypeError, ValueError), match=match):
        reconstruct_maps({"Zn": np.ones((8, 4, 6))}, theta, elements=elements, align="none")
    with pytest.raises((TypeError, ValueError), match=match):
        LiveReconstruction(elements=elements)
