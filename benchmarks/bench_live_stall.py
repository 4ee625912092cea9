"""The live callbacks never stall a scan (issue 14): a one-map run alone, and right after a 120-angle
64 x 64 tomography whose final reconstruction is slowed by 5 s, with the live alignment and reconstruction
subscribed. Before issue 14 the map took 0.10 s alone and 5.05 s after. Run: python benchmarks/bench_live_stall.py"""
import statistics
import time

from bluesky import RunEngine

from xfct_bluesky import reconstruction
from xfct_bluesky.callbacks import (
    LiveDPCAlignment,
    LiveReconstruction,
    LiveWorker,
    SerialEmitter,
)
from xfct_bluesky.devices.sim import make_sim_microprobe
from xfct_bluesky.plans import xfct_tomo, xrf_fly_map

orig = reconstruction.reconstruct_maps
def slow(*a, **k):
    time.sleep(5.0)
    return orig(*a, **k)
reconstruction.reconstruct_maps = slow

mp = make_sim_microprobe(shape=(64, 64), pixel_size=300e-9, save_spectra=False)
worker = LiveWorker("stall")
derived = []
writer = SerialEmitter(lambda n, d: derived.append(n))
rec = LiveReconstruction(emit=writer, elements=("Zn",), worker=worker)
align = LiveDPCAlignment(emit=[writer, rec], worker=worker)
RE = RunEngine({})
RE.subscribe(align); RE.subscribe(rec)
def one_map():
    t0 = time.perf_counter(); RE(xrf_fly_map(mp, shape=(64, 64), pixel_size=300e-9, dwell=1e-3)); return time.perf_counter() - t0
one_map()
alone = statistics.median(one_map() for _ in range(5))
worker.wait(60)
t0 = time.perf_counter()
RE(xfct_tomo(mp, shape=(64, 64), pixel_size=300e-9, n_angles=120, dwell=1e-3))
t_tomo = time.perf_counter() - t0
after = one_map()
t1 = time.perf_counter(); worker.wait(600); t_wait = time.perf_counter() - t1
print(f"one map alone {alone:.3f} s (median of 5); right after the tomography ({t_tomo:.1f} s) {after:.3f} s; "
      f"ratio {after/alone:.2f}; the live work finished {t_wait:.1f} s later")
