"""Quantities (issue 11, item 3): which data key holds which quantity, and one resolver for theta.

Our runs' start documents name the data key of every quantity
(``quantities``); :func:`load_tomo` gives each map under its name
(``tomo.maps["Zn"]``) and still under its data key; runs without
``quantities`` get names read off their data keys. The rotation angle's data
key is found by one function, the same for ``load_tomo``, ``load_theta`` and
the live callbacks. The runs go to the suite's shared Tiled server.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from xfct_bluesky.callbacks._base import theta_key_of
from xfct_bluesky.quantities import (
    CHEMICAL_SYMBOLS,
    STANDARD_NAMES,
    describe,
    is_quantity,
    names_from_keys,
    quantities_of,
    recorded_theta_key,
    theta_key,
)
from xfct_bluesky.storage import Maps, load_theta, load_tomo, make_tiled_writer

NY, NX = 5, 7  # more than 16 pixels: TiledWriter keeps smaller arrays in its table
SCALAR = {"dtype": "number", "shape": [], "source": "sim"}
MAP = {"dtype": "array", "shape": [NY, NX], "source": "sim"}


# ------------------------------------------------------------------------------ vocabulary ---
def test_vocabulary():
    for name in ("theta", "dpc_x", "dpc_y", "dpc_diag", "transmission", "i0", "live_time", "q1", "Zn", "Fe", "K",
                 "Zn_L", "Au_M", "spectra", "x_axis", "y_axis", "projections"):
        assert is_quantity(name), name
        assert describe(name)
    for name in ("Zn_K", "Zn_X", "Xx_L", "_L", "zn", "microprobe_scanner_Zn", "map_dwell", ""):
        assert not is_quantity(name), name
    assert not set(STANDARD_NAMES) & CHEMICAL_SYMBOLS
    assert "L lines" in describe("Zn_L")
    with pytest.raises(KeyError):
        describe("map_dwell")


def test_our_plans_name_every_map_the_scanner_reads(microprobe):
    """Derived from the scanner's components, not written out: every map component, by its name."""
    from xfct_bluesky.plans.xrf import _quantities

    mp = microprobe
    q = _quantities(mp)
    assert q["theta"] == mp.rotation.name == "microprobe_rotation"
    assert q["Zn"] == mp.scanner.Zn.name == "microprobe_scanner_Zn"
    maps = {attr for attr in mp.scanner.read_attrs if attr != "map_dwell"}
    assert set(q) == {"theta", *maps}
    assert all(getattr(mp.scanner, name).name == key for name, key in q.items() if name != "theta")


# ------------------------------------------------------------------------------ fallback names ---
def test_names_from_keys_strip_the_common_device_prefix():
    keys = ["microprobe_scanner_Zn", "microprobe_scanner_dpc_diag", "microprobe_scanner_live_time",
            "microprobe_scanner_q1", "microprobe_scanner_sum", "i0"]
    assert names_from_keys(keys) == {"Zn": "microprobe_scanner_Zn", "dpc_diag": "microprobe_scanner_dpc_diag",
                                     "live_time": "microprobe_scanner_live_time", "q1": "microprobe_scanner_q1",
                                     "i0": "i0"}  # a bare quantity names itself; 'sum' is not a quantity
    # an element's line is not potassium: 'Fe_K' is not 'K' after a device 'Fe'
    assert names_from_keys(["Fe_K", "Zn_K"]) == {}
    assert names_from_keys(["det_Fe_K", "det_Zn"]) == {"Zn": "det_Zn"}
    # the prefix most keys share is the device's; another device's keys keep their data keys
    assert names_from_keys(["a_Zn", "a_Fe", "b_Zn"]) == {"Zn": "a_Zn", "Fe": "a_Fe"}
    assert names_from_keys(["a_Zn", "b_Zn"]) == {}  # whose Zn would 'Zn' be?
    assert names_from_keys(["Zn", "det_Zn"]) == {"Zn": "Zn"}
    assert names_from_keys(["det_fe", "det_total"]) == {}


def test_quantities_of_recorded_else_fallback():
    keys = {"m_rot": SCALAR, "m_Zn": MAP, "xrf_ch3": MAP, "m_spectra": {**MAP, "external": "STREAM:"}}
    recorded = {"quantities": {"theta": "m_rot", "Zn": "xrf_ch3", "Fe": "not_in_this_stream"}}
    assert quantities_of(keys, recorded) == {"Zn": "xrf_ch3"}  # the record wins, theta aside
    assert quantities_of(keys, {}) == {"Zn": "m_Zn"}  # older runs: the maps' names
    assert quantities_of(keys, None) == {"Zn": "m_Zn"}


def test_a_name_that_is_another_maps_data_key_is_not_used(caplog):
    keys = {"Zn": MAP, "det_zinc": MAP}
    with caplog.at_level(logging.WARNING, logger="xfct_bluesky.quantities"):
        assert quantities_of(keys, {"quantities": {"Zn": "det_zinc"}}) == {}
    assert "'Zn' is itself a data key" in caplog.text


# ------------------------------------------------------------------------------ Maps ---
def test_maps_by_name_and_by_data_key_each_map_once():
    zn, dpc, other = np.zeros((2, NY, NX)), np.ones((2, NY, NX)), np.full((2, NY, NX), 2.0)
    maps = Maps({"dev_Zn": zn, "dev_dpc_diag": dpc, "dev_total": other},
                {"Zn": "dev_Zn", "dpc_diag": "dev_dpc_diag", "zinc": "dev_Zn", "Fe": "gone"})
    assert maps["Zn"] is zn and maps["dev_Zn"] is zn and maps["zinc"] is zn
    assert list(maps) == ["Zn", "dpc_diag", "dev_total"]  # each map once, by its first name, in key order
    assert len(maps) == 3 and [a is b for a, b in zip(maps.values(), (zn, dpc, other), strict=True)] == [True] * 3
    assert "dpc_diag" in maps and "dev_dpc_diag" in maps and "Fe" not in maps
    assert maps.data_key("Zn") == maps.data_key("dev_Zn") == "dev_Zn"
    assert dict(maps).keys() == {"Zn", "dpc_diag", "dev_total"}
    with pytest.raises(KeyError, match=r"no map 'Fe'; the maps are \['Zn', 'dpc_diag', 'dev_total'\]"):
        maps["Fe"]
    with pytest.raises(KeyError, match="no map 'Cu'"):
        maps.data_key("Cu")
    assert "'Zn': (2, 5, 7)" in repr(maps)


def test_maps_never_hides_a_map_behind_a_name():
    a, b = np.zeros(3), np.ones(3)
    maps = Maps({"Zn": a, "det_zinc": b}, {"Zn": "det_zinc"})
    assert maps["Zn"] is a and maps["det_zinc"] is b and list(maps) == ["Zn", "det_zinc"]


# ------------------------------------------------------------------------------ theta ---
# (data keys, start document, expected key or the error's text); the old resolvers' verdicts follow in a comment:
# storage's _choose_theta_key / the callbacks' theta_key_of
ROT, OTHER = "mp_rotation", "b_rotation"
THETA_CASES = {
    "quantities first": ({"theta": SCALAR, ROT: SCALAR, "tk": SCALAR},
                         {"quantities": {"theta": ROT}, "theta_key": "tk"}, ROT),  # tk / tk
    "theta_key next": ({"theta": SCALAR, ROT: SCALAR, "tk": SCALAR}, {"theta_key": "tk"}, "tk"),
    "a key named theta": ({"theta": SCALAR, ROT: SCALAR}, {}, "theta"),  # theta / mp_rotation
    "the single scalar rotation": ({ROT: SCALAR, "x_rotation": MAP}, {}, ROT),
    "recorded keys missing": ({"theta": SCALAR}, {"quantities": {"theta": "gone"}, "theta_key": "gone"},
                              "theta"),  # theta, warned / None
    "several rotations": ({ROT: SCALAR, OTHER: SCALAR}, {"theta_key": "gone"},
                          "Several candidate rotation keys"),  # error / the first one
    "no rotation": ({"m_Zn": MAP}, {}, "No rotation angle"),  # error / None
}


@pytest.mark.parametrize("case", list(THETA_CASES))
def test_theta_key_order_and_the_callbacks_agree(case, caplog):
    keys, start, expected = THETA_CASES[case]
    if expected in keys:
        assert theta_key(keys, start) == expected
        assert theta_key_of(start, keys) == expected
    else:
        with pytest.raises(KeyError, match=expected):
            theta_key(keys, start)
        with caplog.at_level(logging.WARNING, logger="xfct_bluesky.callbacks._base"):
            assert theta_key_of(start, keys) is None
        assert expected in caplog.text  # the callbacks say why they ignore the run


def test_theta_key_explicit_and_warned_fallback(caplog):
    keys = {"theta": SCALAR, ROT: SCALAR}
    assert theta_key(keys, {"quantities": {"theta": ROT}}, "theta") == "theta"  # the argument comes first
    with pytest.raises(KeyError, match="theta_key='phi' is not a data key"):
        theta_key(keys, {}, "phi")
    with caplog.at_level(logging.WARNING, logger="xfct_bluesky.quantities"):
        assert theta_key(keys, {"quantities": {"theta": "gone"}, "theta_key": ROT}) == ROT
    assert "quantities['theta']='gone'" in caplog.text
    assert recorded_theta_key({"quantities": {"theta": ROT}, "theta_key": "tk"}) == ROT
    assert recorded_theta_key({"theta_key": "tk"}) == "tk"
    assert recorded_theta_key({"quantities": {"Zn": "x"}}) is None and recorded_theta_key(None) is None


# ------------------------------------------------------------------------------ stored runs ---
@pytest.fixture(scope="module")
def catalog(shared_tiled):
    """The suite's Tiled server: these tests write their runs and read them back by uid."""
    return shared_tiled.catalog


def _device(name):
    """A detector of two 2D maps, ``Zn`` and ``dpc_diag``, new values at each trigger (data keys ``<name>_Zn``...)."""
    from ophyd import Component as Cpt
    from ophyd import Device, Signal
    from ophyd.status import StatusBase

    class TwoMaps(Device):
        Zn = Cpt(Signal, value=np.zeros((NY, NX), np.uint32), kind="normal")
        dpc_diag = Cpt(Signal, value=np.zeros((NY, NX), np.float32), kind="normal")

        def trigger(self):
            rng = np.random.default_rng(len(self.produced))
            zn, dpc = rng.poisson(5, (NY, NX)).astype(np.uint32), rng.normal(size=(NY, NX)).astype(np.float32)
            self.Zn.put(zn)
            self.dpc_diag.put(dpc)
            self.produced.append(zn)
            status = StatusBase()
            status.set_finished()
            return status

        def describe(self):  # the schema's dtype_numpy ("<u4"), which ophyd does not write for a Signal
            out = super().describe()
            for signal in (self.Zn, self.dpc_diag):
                out[signal.name]["dtype_numpy"] = signal.get().dtype.str
            return out

    device = TwoMaps(name=name)
    device.produced = []
    return device


@pytest.fixture(scope="module")
def runs(catalog):
    """Stored: a 2-angle tomography as our plans write it, and an older-style run (bluesky's list_scan of a
    two-map detector): no ``quantities`` and no ``theta_key``, a key named 'theta' and a '*rotation' key."""
    import bluesky.plans as bp
    from bluesky import RunEngine
    from ophyd.sim import SynAxis

    from xfct_bluesky.devices.sim import make_sim_microprobe
    from xfct_bluesky.physics import small_cell
    from xfct_bluesky.plans import xfct_tomo

    mp = make_sim_microprobe(shape=(16, 20), pixel_size=300e-9, seed=0, save_spectra=False,
                             specimen=small_cell(5e-6))
    det = _device("det")
    plans = {"ours": lambda: xfct_tomo(mp, shape=(16, 20), pixel_size=300e-9, angles=[0.0, 90.0], dwell=1e-3),
             "older": lambda: bp.list_scan([det], SynAxis(name="theta"), [0.0, 90.0],
                                           SynAxis(name="stage_rotation"), [30.0, 60.0])}
    out = {"mp": mp, "det": det}
    RE = RunEngine({})
    RE.subscribe(make_tiled_writer(catalog))
    for label, plan in plans.items():
        docs = []
        token = RE.subscribe(lambda name, doc, docs=docs: docs.append((name, doc)))
        (uid,) = RE(plan())
        RE.unsubscribe(token)
        out[label] = (uid, docs)
    return out


def test_our_runs_name_their_data_keys(runs):
    mp, (uid, docs) = runs["mp"], runs["ours"]
    start = next(doc for name, doc in docs if name == "start")
    descriptor = next(doc for name, doc in docs if name == "descriptor" and doc["name"] == "primary")
    keys = descriptor["data_keys"]
    assert start["quantities"]["theta"] == start["theta_key"] == mp.rotation.name
    assert set(start["quantities"].values()) <= set(keys)  # each names a data key of the stream
    maps = {k for k, v in keys.items() if len(v["shape"]) == 2 and not v.get("external")}
    assert set(start["quantities"].values()) - {mp.rotation.name} == maps  # and every map has a name
    assert start["quantities"]["Zn"] == "microprobe_scanner_Zn"


def test_load_tomo_gives_each_map_by_its_quantity(runs, catalog):
    mp, (uid, docs) = runs["mp"], runs["ours"]
    tomo = load_tomo(catalog[uid])
    events = [doc["data"] for name, doc in docs if name == "event" and "microprobe_scanner_Zn" in doc["data"]]
    zn = np.stack([e["microprobe_scanner_Zn"] for e in events])
    np.testing.assert_array_equal(tomo.maps["Zn"], zn)
    assert tomo.maps["Zn"] is tomo.maps["microprobe_scanner_Zn"]  # the data key still answers
    names = list(tomo.maps)
    assert len(names) == len(set(names)) == len(tomo.maps) == 21  # each map once
    assert {"Zn", "Fe", "dpc_diag", "dpc_x", "dpc_y", "transmission", "i0", "live_time", "real_time", "icr", "ocr",
            "q4"} <= set(names)
    assert not any(name.startswith("microprobe_") for name in names)
    start = next(doc for name, doc in docs if name == "start")
    assert tomo.quantities == start["quantities"]  # every name resolved, theta too
    assert tomo.theta_key == mp.rotation.name
    np.testing.assert_allclose(tomo.theta, [0.0, 90.0])


def test_an_older_run_resolves_by_the_fallback(runs, catalog):
    uid, _ = runs["older"]
    run = catalog[uid]
    assert "quantities" not in run.metadata["start"] and "theta_key" not in run.metadata["start"]
    tomo = load_tomo(run)
    assert list(tomo.maps) == ["Zn", "dpc_diag"]  # the device prefix stripped
    assert tomo.quantities == {"theta": "theta", "Zn": "det_Zn", "dpc_diag": "det_dpc_diag"}
    np.testing.assert_array_equal(tomo.maps["Zn"], np.stack(runs["det"].produced))
    assert tomo.maps["Zn"] is tomo.maps["det_Zn"]
    # the key named 'theta' comes before the '*rotation' one (the callbacks used to take stage_rotation)
    assert tomo.theta_key == "theta"
    np.testing.assert_allclose(tomo.theta, [0.0, 90.0])
    np.testing.assert_allclose(load_theta(run), [0.0, 90.0])
    np.testing.assert_allclose(load_theta(run, "stage_rotation"), [30.0, 60.0])


def test_the_live_callbacks_resolve_as_load_tomo(runs, catalog):
    """Fed a stored run's documents, the callbacks find the theta key and the maps load_tomo finds."""
    from xfct_bluesky.callbacks.alignment import LiveDPCAlignment
    from xfct_bluesky.callbacks.reconstruction import LiveReconstruction

    for label in ("ours", "older"):
        uid, docs = runs[label]
        tomo = load_tomo(catalog[uid])
        start = dict(catalog[uid].metadata["start"])
        descriptor = next(doc for name, doc in docs if name == "descriptor" and doc["name"] == "primary")
        align, recon = LiveDPCAlignment(), LiveReconstruction(elements=("Zn",))
        for cb in (align, recon):
            cb("start", start)
            cb("descriptor", descriptor)
            assert cb.wait(10)
        assert align.last_run.keys == (tomo.theta_key, tomo.quantities["dpc_diag"])  # the run's own state
        assert recon.last_run.theta_key == tomo.theta_key
        wanted = ("Zn", "dpc_x", "dpc_y", "dpc_diag")
        assert recon.last_run.keys == {w: tomo.quantities[w] for w in wanted if w in tomo.quantities}
        for cb in (align, recon):
            cb("stop", {"uid": "s", "run_start": start["uid"], "time": 0.0, "exit_status": "success"})
            assert cb.wait(10)
            assert not cb.errors


def test_the_live_callbacks_follow_quantities_over_key_endings():
    """An imported run's keys need not end in the quantity: ``quantities`` names them."""
    from xfct_bluesky.callbacks.alignment import LiveDPCAlignment
    from xfct_bluesky.callbacks.reconstruction import LiveReconstruction

    start = {"uid": "u", "time": 0.0, "n_angles": 2,
             "quantities": {"theta": "angle", "Zn": "xrf_ch3", "dpc_diag": "seg_diagonal", "i0": "ic1"}}
    descriptor = {"uid": "d", "name": "primary", "run_start": "u", "time": 0.0,
                  "data_keys": {"angle": SCALAR, "xrf_ch3": MAP, "seg_diagonal": MAP, "ic1": MAP, "m_Zn": MAP}}
    align, recon = LiveDPCAlignment(), LiveReconstruction()
    for cb in (align, recon):
        cb("start", start)
        cb("descriptor", descriptor)
        assert cb.wait(10)
    run = align.last_run
    assert run.keys == ("angle", "seg_diagonal")
    assert set(run.map_keys) == {"xrf_ch3", "ic1", "m_Zn"}  # Zn and i0 by name, m_Zn by its ending
    assert run.names["xrf_ch3"] == "Zn" and run.names["m_Zn"] == "m_Zn"  # kept under their names
    assert recon.last_run.theta_key == "angle"
    assert recon.last_run.keys == {"Zn": "xrf_ch3", "dpc_diag": "seg_diagonal"}
    for cb in (align, recon):
        cb("stop", {"uid": "s", "run_start": "u", "time": 0.0, "exit_status": "success"})
        assert cb.wait(10)
        assert not cb.errors
