# In the queue server's worker only: estimate_tomo and summarize_plan as functions `function_execute` can call.
# It passes JSON in (a device by its name) and must send JSON back: the estimate as a dict, the summary as text.
# Elsewhere (IPython) both stay the library's own.
print(f"Loading {__file__}")
import contextlib
import io
import json

from bluesky_queueserver import is_re_worker_active

if is_re_worker_active():
    import bluesky.simulators

    import xfct_bluesky.plans

    _devices = {"mp": mp, "microprobe": mp}
    _plans = {"xfct_tomo": xfct_tomo, "xrf_fly_map": xrf_fly_map, "dwell_pair_series": dwell_pair_series}

    def _device(name):
        if name not in _devices:
            raise ValueError(f"microprobe={name!r}: allowed {sorted(_devices)} (the worker's devices, by name)")
        return _devices[name]

    def estimate_tomo(microprobe="mp", **kwargs):
        """xfct_bluesky.plans.estimate_tomo by device name: the estimate as a dict, "summary" its one line."""
        est = xfct_bluesky.plans.estimate_tomo(_device(microprobe), **kwargs)
        return json.loads(json.dumps({**est.as_metadata(), "summary": str(est)}))  # numpy scalars to JSON

    def summarize_plan(plan, microprobe="mp", **kwargs):
        """bluesky's summarize_plan of one of the xfct plans, by name: {"plan": name, "summary": [lines]}."""
        if plan not in _plans:
            raise ValueError(f"plan={plan!r}: allowed {sorted(_plans)}")
        text = io.StringIO()
        with contextlib.redirect_stdout(text):  # bluesky prints the summary
            bluesky.simulators.summarize_plan(_plans[plan](_device(microprobe), **kwargs))
        return {"plan": plan, "summary": text.getvalue().splitlines()}
