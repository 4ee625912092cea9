"""Destroying EPICS devices so their channels are released at once, not whenever the garbage collector runs.

ophyd's ``destroy()`` clears a signal's callbacks but leaves its pyepics-style
PV (caproto's ``pyepics_compat.PV``) registered on caproto's shared
``threading.client.PV`` for that name: the registration is a weak reference
that removes itself when the compat PV is collected. Devices are full of
reference cycles, so that happens at the next cyclic collection, which can run
in the middle of caproto copying the very callback table the weak reference
edits (``CallbackHandler.process``: ``list(self.callbacks.items())`` under a
re-entrant lock the collecting thread already holds), and creating a device
then fails with ``RuntimeError: dictionary changed size during iteration``:
seen in CI when a Session opened the 2-ID-E records right after another had
closed them. :func:`release` removes those registrations (and the PV's
share of the shared monitor) while the device is destroyed, so nothing is left for the collector to do.
"""

from __future__ import annotations

import gc

from ophyd import Device
from ophyd.signal import EpicsSignalBase


def _compat_pvs(device):
    signals = [device] if not isinstance(device, Device) else [
        walk.item for walk in device.walk_signals(include_lazy=False)]
    for signal in signals:
        if isinstance(signal, EpicsSignalBase):
            for attr in ("_read_pv", "_write_pv"):
                pv = getattr(signal, attr, None)
                if pv is not None and hasattr(pv, "_caproto_pv"):  # the caproto layer (pyepics has no such table)
                    yield pv


def _unregister(pv) -> None:
    shared = pv._caproto_pv
    sub, pv._auto_monitor_sub = pv._auto_monitor_sub, None  # shared too: one per name and monitor mask
    for handler in (shared.connection_state_callback, shared.access_rights_callback, sub):
        if handler is None:
            continue
        with handler.callback_lock:
            mine = [cb_id for cb_id, ref in list(handler.callbacks.items())
                    if (f := ref()) is None or getattr(f, "__self__", None) is pv]  # dead refs, this PV's methods
        for cb_id in mine:
            handler.remove_callback(cb_id)  # the weak reference goes with it; the last one off unsubscribes


def release(device) -> None:
    """``device.destroy()`` (a Device or one signal), and its compat PVs taken off caproto's shared PVs and
    their monitors cleared. With the garbage collector held off while the tables are edited, so no collection
    edits them at the same time."""
    pvs = list(_compat_pvs(device))
    device.destroy()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for pv in pvs:
            _unregister(pv)
    finally:
        if enabled:
            gc.enable()
