"""The plans pass the queue server's own validation, in-process (issue 15 item 1; no Redis, no manager).

The namespace is the profile's: ``profile_collection/startup/30-plans.py``
executed over a simulated microprobe bound to ``mp`` and ``microprobe``, as
``10-session.py`` binds the session's. bluesky-queueserver's
``existing_plans_and_devices_from_nspace`` describes the plans from it (as
``qserver-list-plans-devices`` does for the YAML), ``validate_plan`` is what
the manager runs on every submission, and ``prepare_plan`` is what the
worker runs before it calls the plan: valid submissions pass and run, with
the microprobe given by name; bad ones are refused with the queue server's
message; values the queue server cannot judge are refused by the plans
themselves when called, before any message exists. Before, every
submission was refused: ``from __future__ import annotations`` left the
hints as strings the queue server cannot evaluate, and the plans, plain
functions returning generators, were not even listed as plans.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np
import pytest
from bluesky.utils import RunEngineInterrupted
from bluesky_queueserver.manager.profile_ops import (
    existing_plans_and_devices_from_nspace,
    prepare_plan,
    validate_plan,
)

PLANS_FILE = Path(__file__).resolve().parents[1] / "profile_collection" / "startup" / "30-plans.py"
GROUP = "primary"
FIELD = {"shape": [12, 16], "pixel_size": 300e-9}
TOMO = {**FIELD, "n_angles": 4, "dwell": 1e-3}


class Queue:
    """The worker's namespace and the queue server's description of it."""

    def __init__(self, microprobe):
        self.nspace = {"__name__": "__main__", "__file__": str(PLANS_FILE), "mp": microprobe,
                       "microprobe": microprobe}
        exec(compile(PLANS_FILE.read_text(), str(PLANS_FILE), "exec"), self.nspace)
        self.plans, self.devices, self.plans_in_nspace, self.devices_in_nspace = \
            existing_plans_and_devices_from_nspace(nspace=self.nspace)

    def validate(self, item: dict) -> tuple[bool, str]:
        """The manager's check of a submitted plan: (accepted, the queue server's message)."""
        return validate_plan(item, allowed_plans=self.plans, allowed_devices=self.devices)

    def prepare(self, item: dict) -> dict:
        """The worker's preparation: the plan callable and its arguments, device names made devices."""
        return prepare_plan({**item, "user_group": GROUP}, plans_in_nspace=self.plans_in_nspace,
                            devices_in_nspace=self.devices_in_nspace, allowed_plans={GROUP: self.plans},
                            allowed_devices={GROUP: self.devices}, nspace=self.nspace)

    def call(self, item: dict):
        """What the worker hands the RunEngine for ``item``."""
        prepared = self.prepare(item)
        return prepared["callable"](*prepared["args"], **prepared["kwargs"])


@pytest.fixture
def queue(microprobe):
    return Queue(microprobe)


def test_the_queue_server_lists_the_plans_with_every_hint_evaluated(queue):
    assert sorted(queue.plans) == ["dwell_pair_series", "xfct_tomo", "xrf_fly_map"]
    assert {"mp", "microprobe"} <= set(queue.devices)
    for name, description in queue.plans.items():
        params = {p["name"]: p for p in description["parameters"]}
        assert [p for p in params if "annotation" not in params[p]] == [], name  # no hint dropped unread
        assert params["microprobe"]["annotation"] == {"type": "__READABLE__"}  # a device, by its name
        assert params["microprobe"]["convert_device_names"] is True
        assert params["md"]["annotation"]["type"] == "collections.abc.Mapping[str, typing.Any] | None"
    tomo = {p["name"]: p for p in queue.plans["xfct_tomo"]["parameters"]}
    assert tomo["resume"]["annotation"]["type"] == "str | int | None"
    assert tomo["order"]["annotation"]["type"] == "typing.Literal['sequential', 'interlaced', 'golden']"
    assert tomo["shape"]["annotation"]["type"] == "collections.abc.Sequence[int] | None"


@pytest.mark.parametrize("item, n_maps", [
    ({"name": "xfct_tomo", "args": ["mp"], "kwargs": {**TOMO, "order": "golden", "md": {"sample": "egg 3"}}}, 4),
    ({"name": "xfct_tomo", "args": ["microprobe"], "kwargs": {**FIELD, "angles": [0, 45, 90], "total_dose": 1e6}},
     3),
    ({"name": "xrf_fly_map", "kwargs": {"microprobe": "mp", **FIELD, "dwell": 1e-3, "theta": 30}}, 1),
    ({"name": "dwell_pair_series", "args": ["mp"], "kwargs": {**FIELD, "dwells": [1e-3, 2e-3], "theta": 10}}, 4),
], ids=["tomo", "tomo-angles", "map", "pairs"])
def test_valid_submissions_pass_and_run_with_the_microprobe_by_name(queue, RE, docs, microprobe, item, n_maps):
    ok, message = queue.validate(item)
    assert ok, message
    prepared = queue.prepare(item)
    passed = [*prepared["args"], *prepared["kwargs"].values()]
    assert any(value is microprobe for value in passed)  # the name became the device
    (uid,) = RE(prepared["callable"](*prepared["args"], **prepared["kwargs"]))
    start = docs.of("start")[0]
    assert start["uid"] == uid and start["plan_name"] == item["name"]
    assert len(docs.events("primary")) == n_maps and docs.of("stop")[0]["exit_status"] == "success"
    assert start["shape"] == FIELD["shape"] and start["num_points"] == n_maps
    if item["name"] == "xfct_tomo" and "md" in item["kwargs"]:
        assert start["sample"] == "egg 3" and start["order"] == "golden"
    assert microprobe.rotation.position == 0.0 and microprobe.shutter.state.get() == "closed"


REFUSED = [
    ({"name": "xfct_tomo", "args": ["mp"], "kwargs": {**TOMO, "shape": "12x16"}},
     "'str' instances are not allowed as a Sequence value"),
    ({"name": "xfct_tomo", "args": ["mp"], "kwargs": {**TOMO, "shape": [12.0, 16]}},
     "Incorrect parameter type: key='shape'"),
    ({"name": "xfct_tomo", "args": ["mp"], "kwargs": {**TOMO, "n_angles": 4.5}},
     "n_angles\n  Input should be a valid integer, got a number with a fractional part"),
    ({"name": "xfct_tomo", "args": ["mp"], "kwargs": {**TOMO, "order": "random"}},
     "Input should be 'sequential', 'interlaced' or 'golden'"),
    ({"name": "xfct_tomo", "args": ["mp"], "kwargs": {**TOMO, "n_angle": 4}},
     "got an unexpected keyword argument 'n_angle'"),
    ({"name": "xfct_tomo", "args": ["mp"], "kwargs": {"resume": 1.5}}, "resume.int\n  Input should be a valid integer"),
    ({"name": "xfct_tomo", "args": ["mp"], "kwargs": {"resume": True}}, "Incorrect parameter type: key='resume'"),
    ({"name": "xfct_tomo", "kwargs": TOMO}, "missing a required argument: 'microprobe'"),
    ({"name": "xfct_tomo", "args": [5], "kwargs": TOMO}, "microprobe\n  Input should be a valid string"),
    ({"name": "xfct_tomo", "args": ["mp"], "kwargs": {**TOMO, "md": ["sample", "egg"]}},
     "md\n  Input should be a valid dictionary"),
    ({"name": "dwell_pair_series", "args": ["mp"], "kwargs": {**FIELD, "dwells": "3e-3"}},
     "dwells\n  'str' instances are not allowed as a Sequence value"),
    ({"name": "xrf_fly_map", "args": ["mp"], "kwargs": {**FIELD, "dwell": 1e-3, "theta": "45"}},
     "Incorrect parameter type: key='theta'"),
    ({"name": "count", "args": [["mp"]]}, "Plan 'count' is not in the list of allowed plans"),
]


@pytest.mark.parametrize("item, message", REFUSED, ids=[m.splitlines()[-1][:40] for _, m in REFUSED])
def test_bad_submissions_are_refused_by_the_queue_server(queue, item, message):
    ok, text = queue.validate(item)
    assert not ok
    assert text.startswith("Plan validation failed:") and message in text, text


# values of the right type the queue server passes, and the plan refuses when the worker calls it
CALL_TIME = [
    ({"name": "xfct_tomo", "args": ["mp"], "kwargs": {**TOMO, "n_angles": 1}}, "n_angles=1"),
    ({"name": "xfct_tomo", "args": ["mp"], "kwargs": {**TOMO, "dwell": 50.0}}, "dwell=50.0 s is out of range"),
    ({"name": "xfct_tomo", "args": ["mp"], "kwargs": {**TOMO, "shape": [4, 4]}}, "too small to store"),
    ({"name": "xfct_tomo", "args": ["mp"], "kwargs": {**TOMO, "md": {"uid": "mine"}}}, "made by the RunEngine"),
    ({"name": "xfct_tomo", "args": ["mq"], "kwargs": TOMO}, "microprobe='mq' is a string, not a device"),
    ({"name": "xfct_tomo", "args": ["mp"], "kwargs": {"resume": 0}}, "resume=0 is neither a run's uid"),
    ({"name": "xfct_tomo", "args": ["mp"], "kwargs": {"resume": 7}}, "resume=7 is a scan_id: give catalog="),
    ({"name": "xrf_fly_map", "args": ["mp"], "kwargs": {**FIELD, "dwell": True}}, "dwell=True is a bool"),
    ({"name": "dwell_pair_series", "args": ["mp"], "kwargs": {**FIELD, "dwells": [3e-3, -1.0]}}, "dwells[1]=-1.0"),
]


@pytest.mark.parametrize("item, message", CALL_TIME, ids=[m[:30] for _, m in CALL_TIME])
def test_what_the_queue_server_passes_the_plan_refuses_before_any_message(queue, microprobe, tmp_path, item,
                                                                          message):
    from xfct_bluesky.session import Session

    assert Session.current() is None  # else resume= would search its catalog
    microprobe.rotation.set(7.0).wait()
    ok, text = queue.validate(item)
    assert ok, text
    with pytest.raises(ValueError, match=re.escape(message)):
        queue.call(item)  # the call raises: no generator exists, nothing is yielded
    assert microprobe.rotation.position == 7.0 and microprobe.truth.offsets.shape == (0, 2)
    assert not list(tmp_path.rglob("*.h5"))


def test_resume_by_scan_id_or_uid_finds_the_run_in_the_active_session(queue, microprobe, shared_tiled, tmp_path):
    """The queue server passes JSON: ``resume=`` a scan_id or a uid, searched in ``Session.current()``'s catalog."""
    from xfct_bluesky.session import Session
    from xfct_bluesky.storage import load_tomo
    from xfct_bluesky.storage.resume import find_run

    with Session(tmp_path / "data", uri=shared_tiled.server.uri, microprobe=microprobe, live=False, journal=False,
                 persistent_md=False) as session:
        assert Session.current() is session
        RE, cat = session.RE, session.catalog
        starts, primary = [], set()

        def pause_at_the_second_map(name, doc):
            if name == "start":
                starts.append(doc)
            if name == "descriptor" and doc["name"] == "primary":
                primary.add(doc["uid"])
            if name == "event" and doc["descriptor"] in primary and doc["seq_num"] == 2:
                threading.Thread(target=RE.request_pause).start()  # a user's Ctrl-C, then RE.abort()

        token = RE.subscribe(pause_at_the_second_map)
        with pytest.raises(RunEngineInterrupted):
            RE(queue.call({"name": "xfct_tomo", "args": ["mp"], "kwargs": TOMO}))
        RE.abort("test: an interrupted tomography")
        RE.unsubscribe(token)
        scan_id = starts[0]["scan_id"]  # as the session numbered it
        first = cat[scan_id].metadata["start"]
        done = load_tomo(cat[first["uid"]]).theta
        assert first["uid"] == starts[0]["uid"] and 2 <= done.size < TOMO["n_angles"]

        by_scan_id = {"name": "xfct_tomo", "args": ["mp"], "kwargs": {"resume": scan_id}}
        ok, text = queue.validate(by_scan_id)
        assert ok, text
        (uid,) = RE(queue.call(by_scan_id))
        resumed = cat[uid].metadata["start"]
        assert resumed["resumed_from"] == resumed["plan_args"]["resume"] == first["uid"]
        both = np.concatenate([done, load_tomo(cat[uid]).theta])
        np.testing.assert_allclose(np.sort(both), np.sort(first["angles"]))  # every angle exactly once

        # a uid, or its first characters, names the same run (resolved when the plan is called)
        for ref in (first["uid"], first["uid"][:8]):
            assert queue.validate({"name": "xfct_tomo", "args": ["mp"], "kwargs": {"resume": ref}})[0]
            assert find_run(ref, Session.current().catalog).metadata["start"]["uid"] == first["uid"]
        assert find_run(-1, cat).metadata["start"]["uid"] == uid  # -1: the last run, as cat[-1]
    assert Session.current() is None
    with pytest.raises(ValueError, match=rf"resume={scan_id} is a scan_id: give catalog=.*open a Session"):
        queue.call(by_scan_id)
