# The session (xfct_bluesky.Session): RunEngine with persistent metadata, the Tiled catalog (embedded server, or
# XFCT_BLUESKY_TILED_URI) written through one journaled writer with a backup folder, the microprobe (simulated
# unless XFCT_BLUESKY_HARDWARE=epics, or =beamline: the plans' microprobe on XFCT_BLUESKY_BEAMLINE's records, as
# `xfct-bluesky shell --beamline FILE` sets it for a file with a beam: section), a progress bar, and the live DPC
# alignment and reconstruction (their derived runs in Tiled, linked by raw_uid; figures drawn on the main thread,
# none headless). In the queue
# server's worker: no figures and no progress bar (nobody watches its terminal), the same runs and derived runs.
print(f"Loading {__file__}")
from bluesky.callbacks.best_effort import BestEffortCallback  # noqa: E402
from bluesky_queueserver import is_re_worker_active
from tiled.queries import Key  # noqa: E402, F401

from xfct_bluesky.session import Session  # noqa: E402
from xfct_bluesky.storage import load_spectra, load_tomo  # noqa: E402, F401

interactive = not is_re_worker_active()
session = Session(DATA_DIR, microprobe=os.environ.get("XFCT_BLUESKY_HARDWARE", "sim"),  # noqa: F821
                  progress=interactive, plots=interactive).open()
session.close_at_exit()  # the embedded server stops when the interpreter ends
RE, cat, mp, tiled_writer = session.RE, session.catalog, session.microprobe, session.writer
microprobe = mp
beamline = session.beamline  # XFCT_BLUESKY_BEAMLINE's records (xfct-bluesky shell --beamline FILE), or None
live_alignment, live_reconstruction = session.live_alignment, session.live_reconstruction
bec = BestEffortCallback()
bec.disable_table()  # the progress bar reports each projection: no interleaved table rows
if matplotlib.get_backend().lower() == "agg":  # noqa: F821
    bec.disable_plots()
RE.subscribe(bec)
