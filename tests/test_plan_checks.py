"""Plans refuse bad arguments and unstorable metadata when they are called (issue 12, items 2 and 3).

Each bad input is given to the plan function itself, without a RunEngine: it
must raise there (before this, ``xrf_fly_map``, ``xfct_tomo`` and
``dwell_pair_series`` were generator functions whose checks ran only at the
first step, and many of these inputs were accepted: ``dwell=True`` was 1 s per
pixel, ``max_dose=NaN`` switched the dose budget off, ``md={"x": 1j}`` lost
the run after the HDF5 file was opened). The message must name the argument
and the value; nothing may have moved, been acquired or been written.
"""

from __future__ import annotations

import inspect
import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from bluesky import RunEngine

from xfct_bluesky.plans import (
    beam_loss_suspender,
    dwell_pair_series,
    estimate_tomo,
    xfct_tomo,
    xrf_fly_map,
)
from xfct_bluesky.plans.planning import MAX_ANGLES

SHAPE = (12, 16)
PIXEL = 300e-9
NAN = float("nan")


def _map(**kw):
    return partial(xrf_fly_map, **{"shape": SHAPE, "pixel_size": PIXEL, "dwell": 1e-3, **kw})


def _tomo(**kw):
    return partial(xfct_tomo, **{"shape": SHAPE, "pixel_size": PIXEL, "n_angles": 4, "dwell": 1e-3, **kw})


def _pairs(**kw):
    return partial(dwell_pair_series, **{"shape": SHAPE, "pixel_size": PIXEL, **kw})


# (id, plan maker, what the message must contain: the argument with the value, then the allowed range or fix)
BAD_ARGUMENTS = [
    ("map-dwell-True", _map(dwell=True), "dwell=True is a bool, not a number", "allowed: 0.0001..10 s per pixel"),
    ("map-dwell-str", _map(dwell="3e-3"), "dwell='3e-3' is a string", "Write the number without quotes: dwell=3e-3"),
    ("map-dwell-nan", _map(dwell=NAN), "dwell=nan is not finite", "allowed: 0.0001..10 s per pixel"),
    ("map-shape-np.True_", _map(shape=np.True_), "shape=np.True_ is a bool, not a shape", "pair (ny, nx)"),
    ("map-shape-str", _map(shape=("12", "16")), "shape[0]='12' is a string", "integer in 1..8192"),
    ("map-shape-bool-side", _map(shape=(12, True)), "shape[1]=True is a bool", "integer in 1..8192"),
    ("map-shape-fraction", _map(shape=(12, 16.5)), "shape[1]=16.5", "integer in 1..8192"),
    ("map-pixel-True", _map(pixel_size=True), "pixel_size=True is a bool", "> 0 m"),
    ("map-theta-str", _map(theta="45"), "theta='45' is a string", "theta=45"),
    ("map-theta-True", _map(theta=True), "theta=True is a bool", "angle in degrees"),
    ("tomo-dwell-True", _tomo(dwell=True), "dwell=True is a bool", "allowed: 0.0001..10 s per pixel"),
    ("tomo-dwell-str", _tomo(dwell="3e-3"), "dwell='3e-3' is a string", "dwell=3e-3"),
    ("tomo-total_dose-True", _tomo(dwell=None, total_dose=True), "total_dose=True is a bool", "dose > 0 Gy"),
    ("tomo-total_dose-nan", _tomo(dwell=None, total_dose=NAN), "total_dose=nan is not finite", "dose > 0 Gy"),
    ("tomo-shape-np.True_", _tomo(shape=np.True_), "shape=np.True_ is a bool", "pair (ny, nx)"),
    ("tomo-angles-str", _tomo(n_angles=None, angles=["a", "b"]), "angles[0]='a' is a string", "angles=[0, 45, 90]"),
    ("tomo-angles-one-str", _tomo(n_angles=None, angles="0, 90"), "angles='0, 90'", "a sequence of"),
    ("tomo-angles-bool", _tomo(n_angles=None, angles=[0, True]), "angles[1]=True is a bool", "angle in degrees"),
    ("tomo-angles-duplicate", _tomo(n_angles=None, angles=[0, 10, 10.0004, 20]),
     "angles[1]=10 and angles[2]=10.0004", "each angle once"),
    ("tomo-angles-identical", _tomo(n_angles=None, angles=[0, 90, 0]), "angles[0]=0 and angles[2]=0",
     "within 0.001 deg"),
    ("tomo-angles-with-golden", _tomo(n_angles=None, angles=[0, 90], order="golden"), "order='golden'",
     "omit order"),
    ("tomo-max_dose-nan", _tomo(max_dose=NAN), "max_dose=nan is not finite", "allowed: a finite number > 0 Gy"),
    ("tomo-max_dose-True", _tomo(max_dose=True), "max_dose=True is a bool", "> 0 Gy"),
    ("tomo-n_angles-huge", _tomo(n_angles=10**9), "n_angles=1000000000", f"integer in 2..{MAX_ANGLES}"),
    ("tomo-n_angles-True", _tomo(n_angles=True), "n_angles=True is a bool", "integer in 2.."),
    ("tomo-n_angles-str", _tomo(n_angles="4"), "n_angles='4' is a string", "n_angles=4"),
    ("tomo-n_angles-too-close", _tomo(n_angles=20000, angular_range=10), "n_angles=20000 over angular_range=10",
     "within 0.001 deg"),
    ("tomo-angular_range-True", _tomo(angular_range=True), "angular_range=True is a bool", "(0, 360] degrees"),
    ("tomo-angular_range-str", _tomo(angular_range="180"), "angular_range='180' is a string", "angular_range=180"),
    ("tomo-angular_range-nan", _tomo(n_angles=None, angles=[0, 500], angular_range=NAN), "angular_range=nan",
     "(0, 360] degrees"),
    ("tomo-order-list", _tomo(order=["golden"]), "order=['golden'] is not known", "'interlaced', 'golden'"),
    ("tomo-order-None", _tomo(order=None), "order=None is not known", "'sequential'"),
    ("tomo-retries-True", _tomo(retries=True), "retries=True is a bool", "integer >= 0"),
    ("tomo-retries-str", _tomo(retries="2"), "retries='2' is a string", "retries=2"),
    ("tomo-timeout-True", _tomo(detector_timeout=True), "detector_timeout=True is a bool", "seconds > 0"),
    ("tomo-timeout-str", _tomo(detector_timeout="60"), "detector_timeout='60' is a string", "detector_timeout=60"),
    ("tomo-timeout-nan", _tomo(detector_timeout=NAN), "detector_timeout=nan", "None (automatic) or seconds > 0"),
    ("tomo-resume-float", partial(xfct_tomo, resume=1.5), "resume=1.5 is neither a run's uid, a scan_id nor a run",
     "resume=<scan_id>"),
    ("tomo-resume-bool", partial(xfct_tomo, resume=True), "resume=True is neither", "an int > 0"),
    ("tomo-resume-zero", partial(xfct_tomo, resume=0), "resume=0 is neither", "-1 is the last run"),
    # a scan_id is a run's name now (the queue server passes JSON), but with no catalog and no session, none is
    # searched: the message says where to look
    ("tomo-resume-scan_id-nowhere", partial(xfct_tomo, resume=12345), "resume=12345 is a scan_id: give catalog=",
     "open a Session"),
    ("tomo-resume-catalog-str", partial(xfct_tomo, resume="abcdef", catalog="cat"), "catalog='cat'",
     "a Tiled container of runs"),
    ("tomo-microprobe-name", lambda mp: xfct_tomo("mp", shape=SHAPE, pixel_size=PIXEL, n_angles=4, dwell=1e-3),
     "microprobe='mp' is a string, not a device", "give the device"),
    ("tomo-microprobe-part", lambda mp: xfct_tomo(mp.scanner, shape=SHAPE, pixel_size=PIXEL, n_angles=4,
                                                  dwell=1e-3), "microprobe=FlyRaster(", "not one of its parts"),
    ("pairs-dwells-str", _pairs(dwells="3e-3"), "dwells='3e-3'", "a sequence of dwells"),
    ("pairs-dwells-bool", _pairs(dwells=(True, 3e-3)), "dwells[0]=True is a bool", "0.0001..10 s per pixel"),
    ("pairs-dwells-dict", _pairs(dwells={}), "dwells={}", "a sequence of dwells"),
    ("pairs-dwells-empty", _pairs(dwells=()), "dwells=() is empty", "at least one dwell"),
    ("pairs-theta-True", _pairs(theta=True), "theta=True is a bool", "angle in degrees"),
    ("pairs-theta-nan", _pairs(theta=NAN), "theta=nan", "angle in degrees"),
]


def _assert_nothing_happened(mp, tmp_path: Path, position: float) -> None:
    assert mp.rotation.position == position  # nothing moved
    assert mp.truth.offsets.shape == (0, 2)  # nothing acquired
    assert not list(tmp_path.rglob("*.h5"))  # no orphan spectra file


@pytest.mark.parametrize("make, named, allowed", [c[1:] for c in BAD_ARGUMENTS], ids=[c[0] for c in BAD_ARGUMENTS])
def test_bad_arguments_refused_when_the_plan_is_called(microprobe, tmp_path, make, named, allowed):
    microprobe.rotation.set(7.0).wait()
    with pytest.raises(ValueError) as info:
        make(microprobe)  # the call itself raises: no generator exists that a RunEngine could start
    message = str(info.value)
    assert named in message and allowed in message, message
    _assert_nothing_happened(microprobe, tmp_path, 7.0)


# estimate_tomo is xfct_tomo's dry run: the same arguments are refused with the same message
_ESTIMATE_ARGS = set(inspect.signature(estimate_tomo).parameters)
ESTIMATE_CASES = [c for c in BAD_ARGUMENTS
                  if getattr(c[1], "func", None) is xfct_tomo and set(c[1].keywords) <= _ESTIMATE_ARGS]


@pytest.mark.parametrize("make", [c[1] for c in ESTIMATE_CASES], ids=[c[0] for c in ESTIMATE_CASES])
def test_estimate_tomo_refuses_what_xfct_tomo_refuses(microprobe, make):
    with pytest.raises(ValueError) as via_plan:
        make(microprobe)
    with pytest.raises(ValueError) as via_estimate:
        estimate_tomo(microprobe, **make.keywords)
    assert str(via_estimate.value) == str(via_plan.value)


MD_CASES = [
    ("complex", {"x": 1 + 2j}, "md['x']=(1+2j) is complex", "md['x']={'real': ..., 'imag': ...}"),
    ("object", {"x": object()}, "md['x']=<object object", "str(...)"),
    ("nested", {"a": {"b": [1, 1j]}}, "md['a']['b'][1]=1j is complex", "cannot store"),
    ("array-complex", {"z": np.array([1, 1j])}, "md['z'][0]=(1+0j) is complex", "cannot store"),
    ("set", {"s": {1, 2}}, "md['s']={1, 2} is of type set", "sorted("),
    ("key-int", {1: "a"}, "md[1]: the key 1 is refused", "non-empty strings"),
    ("key-dot", {"a.b": 1}, "md['a.b']: the key 'a.b' is refused", "md['a_b']"),
    ("key-nested-slash", {"a": {"b/c": 1}}, "md['a']['b/c']: the key 'b/c'", "without '.' or '/'"),
    ("nan", {"x": NAN}, "md['x']=nan", "no NaN or infinity"),
    ("inf-nested", {"x": [1.0, np.float64("inf")]}, "md['x'][1]=inf", "no NaN or infinity"),
    ("huge-int", {"n": 10**30}, "md['n']=1000000000000000000000000000000", "2**53 - 1"),
    ("cycle", None, "md['self'] contains itself", "without cycles"),
    ("uid", {"uid": "abc"}, "md['uid']='abc'", "made by the RunEngine"),
    ("time", {"time": 5}, "md['time']=5", "set by the RunEngine"),
    ("scan_id", {"scan_id": 7}, "md['scan_id']=7", "scan counter"),
    ("plan_name", {"plan_name": "mine"}, "md['plan_name']='mine'", "written by xrf_fly_map itself"),
    ("shape", {"shape": 5}, "md['shape']=5", "written by xrf_fly_map itself"),
    ("sample-list", {"sample": [1, 2]}, "md['sample']=[1, 2]", "allows a dict or a string"),
    ("owner-int", {"owner": 5}, "md['owner']=5", "allows a string"),
    ("not-a-mapping", "x", "md='x' is of type str, not a mapping", "md={'sample': 'egg 3'"),
    ("a-list", [("sample", "egg")], "md=[('sample', 'egg')] is of type list", "a dict of metadata"),
]


@pytest.mark.parametrize("md, named, allowed", [c[1:] for c in MD_CASES], ids=[c[0] for c in MD_CASES])
def test_unstorable_metadata_refused_when_the_plan_is_called(microprobe, tmp_path, md, named, allowed):
    if md is None:
        md = {}
        md["self"] = md
    for make in (_map(md=md), _pairs(md=md)):
        with pytest.raises(ValueError) as info:
            make(microprobe)
        message = str(info.value).replace("dwell_pair_series", "xrf_fly_map")
        assert named in message and allowed in message, message
    _assert_nothing_happened(microprobe, tmp_path, 0.0)


def test_xfct_tomo_refuses_its_own_keys_in_md(microprobe):
    for key in ("angles", "n_angles", "total_dose", "resumed_from"):
        with pytest.raises(ValueError, match=rf"md\['{key}'\]=1: '{key}' is written by xfct_tomo itself"):
            xfct_tomo(microprobe, shape=SHAPE, pixel_size=PIXEL, n_angles=4, dwell=1e-3, md={key: 1})


@pytest.mark.parametrize("kwargs, message", [
    ({"threshold": True}, "threshold=True is a bool, not a number; allowed: a finite number >= 0"),
    ({"threshold": "10"}, ("threshold='10' is a string, not a number; allowed: a finite number >= 0. Write the "
                           "number without quotes: threshold=10")),
    ({"threshold": 0.5, "resume_threshold": True}, "resume_threshold=True is a bool"),
    ({"sleep": True}, "sleep=True is a bool, not a number; allowed: a finite number >= 0 s"),
    ({"sleep": NAN}, "sleep=nan is not finite; allowed: a finite number >= 0 s"),
    ({"signal": 12}, "signal=12: allowed an ophyd Signal"),
    ({"tripped_message": 5}, "tripped_message=5: allowed a string"),
], ids=["threshold-True", "threshold-str", "resume-True", "sleep-True", "sleep-nan", "signal-int", "message-int"])
def test_beam_loss_suspender_refuses_what_is_not_a_number(microprobe, kwargs, message):
    with pytest.raises(ValueError) as info:
        beam_loss_suspender(microprobe, **kwargs)
    assert message in str(info.value)


# ---------------------------------------------------------------- what users pass and must keep working
def test_numpy_arguments_and_metadata_run_and_read_back_plain(docs, microprobe):
    mp = microprobe
    RE = RunEngine({}, call_returns_result=True)
    RE.subscribe(docs)
    md = {"sample": "egg 3", "n": np.int64(3), "f": np.float64(0.25), "g": np.float32(0.5), "ok": np.bool_(True),
          "a": np.arange(3), "m": np.eye(2), "nested": {"t": (np.int32(1), "x")}, "name": np.str_("q")}
    result = RE(xfct_tomo(mp, shape=(np.int64(12), np.int32(16)), pixel_size=np.float32(300e-9),
                          n_angles=np.int64(3), dwell=np.float64(1e-3), retries=np.int64(1),
                          detector_timeout=np.float32(60), order=np.str_("golden"), md=md))
    (start,) = docs.of("start")
    assert result.plan_result == start["uid"] == result.run_start_uids[0]  # the generator returns the uid
    assert start["shape"] == [12, 16] and start["n_angles"] == 3 and start["dwell"] == 1e-3
    assert start["plan_args"]["n_angles"] == 3 and start["plan_args"]["retries"] == 1
    assert start["plan_args"]["detector_timeout"] == 60.0
    assert start["sample"] == "egg 3" and start["n"] == 3 and start["f"] == 0.25 and start["g"] == 0.5
    assert start["ok"] is True and start["a"] == [0, 1, 2] and start["m"] == [[1.0, 0.0], [0.0, 1.0]]
    assert start["nested"] == {"t": (1, "x")} and start["name"] == "q"
    assert type(start["n"]) is int and type(start["name"]) is str
    json.dumps(start, allow_nan=False)  # the whole start document is plain JSON: Tiled stores it
    assert len(docs.events("primary")) == 3 and docs.of("stop")[0]["exit_status"] == "success"
    assert type(md["n"]) is np.int64  # the caller's md is not modified


def test_map_and_pairs_take_numpy_values(RE, docs, microprobe):
    (uid,) = RE(xrf_fly_map(microprobe, shape=np.array([12, 16]), pixel_size=PIXEL, dwell=np.float64(1e-3),
                            theta=np.float32(30), md={"dose_note": np.float64(1.5)}))
    RE(dwell_pair_series(microprobe, dwells=np.array([3e-3, 6e-3]), theta=np.int64(20), shape=SHAPE,
                         pixel_size=PIXEL))
    first, second = docs.of("start")
    assert first["uid"] == uid and first["shape"] == [12, 16] and first["plan_args"]["theta"] == 30.0
    assert first["dose_note"] == 1.5
    assert second["dwells"] == [3e-3, 6e-3] and second["theta"] == 20.0
    for start in (first, second):
        json.dumps(start, allow_nan=False)


def test_the_stage_returns_to_where_it_was_when_the_plan_ran_not_when_it_was_made(RE, microprobe):
    mp = microprobe
    mp.rotation.set(7.0).wait()
    plan = xrf_fly_map(mp, shape=SHAPE, pixel_size=PIXEL, dwell=1e-3, theta=30.0)
    mp.rotation.set(12.0).wait()
    RE(plan)
    assert mp.rotation.position == 12.0


@pytest.mark.parametrize("n", [6, 10, 102, 9762])
def test_interlaced_angles_are_the_sequential_grid_for_every_n(n):
    # regression: for n = 2 mod 4 the second loop took one angle too many (n=10: 0 deg twice, 162 deg never),
    # which the duplicate-angle check would now refuse
    from xfct_bluesky.plans import tomo_angles

    np.testing.assert_allclose(np.sort(tomo_angles(n, 180, "interlaced")), tomo_angles(n, 180, "sequential"))


def test_the_session_run_engine_refuses_metadata_it_cannot_store(tmp_path, microprobe):
    """``RE.md`` and ``RE(plan, **md)`` bypass the plans' own md= check: the session's md_validator catches them."""
    from xfct_bluesky.plans import xrf_fly_map
    from xfct_bluesky.session import make_run_engine

    RE = make_run_engine(tmp_path)
    seen = []
    RE.subscribe(lambda name, doc: seen.append(name))
    with pytest.raises(ValueError, match=r"md\['x'\]=\(1\+2j\) is complex"):
        RE(xrf_fly_map(microprobe, shape=(16, 20), pixel_size=300e-9, dwell=1e-4), x=1 + 2j)
    RE.md["operator"] = float("nan")  # the persistent metadata holds it; JSON and Tiled cannot
    with pytest.raises(ValueError, match=r"md\['operator'\]=nan"):
        RE(xrf_fly_map(microprobe, shape=(16, 20), pixel_size=300e-9, dwell=1e-4))
    assert "start" not in seen
    del RE.md["operator"]
    (uid,) = RE(xrf_fly_map(microprobe, shape=(16, 20), pixel_size=300e-9, dwell=1e-4), operator="ada")
    assert seen[0] == "start" and isinstance(uid, str)


@pytest.mark.parametrize("make", [
    lambda mp: xrf_fly_map(mp, shape=(4, 4), pixel_size=300e-9, dwell=1e-4),
    lambda mp: xfct_tomo(mp, shape=(2, 8), pixel_size=300e-9, n_angles=4, dwell=1e-4),
    lambda mp: dwell_pair_series(mp, shape=(4, 4), pixel_size=300e-9),
])
def test_a_map_too_small_for_tiled_is_refused_when_the_plan_is_called(make, microprobe, tmp_path):
    """Maps of 16 pixels or fewer go to TiledWriter's table, which cannot hold them: the run was lost at its stop."""
    with pytest.raises(ValueError, match=r"pixels is too small to store; allowed: more than 16 pixels"):
        make(microprobe)
    assert not list(tmp_path.rglob("*.h5"))
