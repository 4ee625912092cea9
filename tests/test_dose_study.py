"""The dose-fractionation study (issue 17), reduced: a small field, two schedules at equal dose, three seeds.

Every ordering asserted is the one measured, with a tolerance from the spread over the seeds (paired by
seed: the same noise seed gives both schedules' runout and noise their own draws, so pairs are
alignment against alignment on the same data). The full study is benchmarks/dose_study_full.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from xfct_bluesky.dose_study import (
    crowther_period,
    dose_study,
    format_study,
    markdown_table,
    study_figure,
)

SEEDS = (0, 1, 2)
# a 8 um cell in 48 px (14.4 um): D = 26.7 px, so 6 angles sample periods down to 14 px, 24 angles to 3.5 px;
# 1.2 s per pixel in all: enough Zn counts that the noise does not hide the difference
FEW, MANY = (6, 0.2), (24, 0.05)


@pytest.fixture(scope="module")
def study():
    return dose_study(schedules=(FEW, MANY), alignments=("auto", "none", "truth"), size=48, rows=8, margin=2,
                      cell_diameter=8e-6, seeds=SEEDS)


def _values(res, n_angles, align, metric):
    cases = sorted((c for c in res.cases if c.n_angles == n_angles and c.align == align), key=lambda c: c.seed)
    assert [c.seed for c in cases] == list(SEEDS)
    return np.array([getattr(c, metric) for c in cases], float)


def _paired(a, b):
    """(mean of a - b, its standard error) over the seeds."""
    d = a - b
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size))


def test_many_angles_resolve_finer_than_few_at_equal_dose(study):
    assert len({round(c.total_dose, 3) for c in study.cases}) == 1  # equal dose: n x dwell the same
    for align in ("truth", "auto"):
        few = _values(study, FEW[0], align, "frc_half")
        many = _values(study, MANY[0], align, "frc_half")
        assert np.isfinite(few).all() and np.isfinite(many).all()  # every half-bit curve crossed
        diff, se = _paired(few, many)
        assert diff > 3 * se and diff > 2.0, (align, few, many)  # measured: 8.9 against 4.7 px (truth)
        # few angles stay near (within a factor 1.5 of) their Crowther period; many reach the noise floor
        assert few.mean() > crowther_period(FEW[0], 8e-6 / 300e-9) / 1.5 - 3 * few.std()


def test_runout_costs_and_dpc_alignment_recovers_it(study):
    for n, _ in (FEW, MANY):
        truth, none, auto = (_values(study, n, al, "nrmse") for al in ("truth", "none", "auto"))
        lost, se = _paired(none, truth)
        assert lost > 2 * se and lost > 0.02, (n, none, truth)  # measured 0.12 (6 angles), 0.05 (24)
        kept, _ = _paired(auto, truth)
        assert kept < 0.6 * lost, (n, auto, truth, none)  # auto (DPC) wins back most of it
        errors = [c.alignment_error for c in study.cases if c.n_angles == n and c.align == "auto"]
        assert np.median([e[1] for e in errors]) < 0.5  # horizontal error, px
        assert all(c.applied for c in study.cases if c.n_angles == n and c.align == "auto")


def test_the_reconstruction_lies_in_the_phantoms_frame(study):
    """The slices and the phantom share their orientation (slice rows along -z, acquire._orient)."""
    truth = study.phantom[study.phantom.shape[0] // 2]
    img = study.slices[(f"{MANY[0]} x {MANY[1] * 1e3:g} ms", "truth")]

    def corr(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    # measured 0.95 as it lies, 0.87 and 0.86 flipped (a round cell: most of it looks alike either way)
    assert corr(img, truth) > 0.9
    assert corr(img, truth) > corr(img, truth[::-1]) + 0.04 and corr(img, truth) > corr(img, truth[:, ::-1]) + 0.04


def test_the_table_and_the_figure(study, tmp_path):
    text = format_study(study)
    assert len(text.splitlines()) == 1 + 6 + 1 and "FRC halves" in text and "3 seeds (0, 1, 2)" in text
    assert " +- " in text and "Zn from ROI window" in text
    md = markdown_table(study)
    assert md.splitlines()[0].startswith("| schedule | Crowther") and md.count("\n| 24 x 50 ms |") == 3
    assert study_figure(study, tmp_path / "study.png").read_bytes()[:4] == b"\x89PNG"
    summary = study.summary()
    row = summary[("6 x 200 ms", "truth")]
    assert row["seeds"] == 3 and row["frc_half"][2] == 3 and row["frc_half"][1] > 0


def test_the_plan_path_gives_the_simulators_angles_and_dose():
    """One small schedule through xfct_tomo and a Session, beside the simulator driven directly."""
    kw = {"schedules": ((4, 20e-3),), "alignments": ("truth",), "size": 32, "rows": 7, "margin": 1,
          "cell_diameter": 5e-6, "iterations": 2}
    plan = dose_study(pipeline="bluesky", **kw)
    direct = dose_study(**kw)
    (a,), (b,) = plan.cases, direct.cases
    assert a.total_dose == pytest.approx(b.total_dose, rel=1e-9)  # the start document's dose is the simulator's
    assert 0 < a.nrmse < 1 and 0 < b.nrmse < 1 and abs(a.nrmse - b.nrmse) < 0.15
    assert plan.settings["pipeline"] == "bluesky" and direct.settings["pipeline"] == "simulator"


@pytest.mark.parametrize("kwargs, text", [
    ({"schedules": ((1, 0.03),)}, "n_angles=1"),
    ({"schedules": ((24, -1.0),)}, "dwell=-1.0: allowed 0.0001..10 s per pixel"),
    ({"schedules": ((24, 0.03),), "size": 64}, "needs 29.0 um; the field of 64 px of 300 nm is 19.2 um"),
    ({"schedules": ((24, 0.03),), "rows": 4}, "rows=4: allowed an integer >= 7"),
    ({"schedules": ((24, 0.03),), "seeds": ()}, "seeds=() is empty"),
    ({"schedules": ((24, 0.03),), "pipeline": "epics"}, "pipeline='epics' is not known"),
])
def test_a_study_that_cannot_run_is_refused_before_any_work(kwargs, text):
    with pytest.raises(ValueError) as err:
        dose_study(**kwargs)
    assert text in str(err.value)
