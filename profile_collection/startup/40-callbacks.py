# Live feedback: a progress bar per run, the latest maps, live DPC alignment and
# live reconstruction (shifts and volumes are stored in Tiled as derived runs
# linked by raw_uid).
print(f"Loading {__file__}")
from xfct_bluesky.callbacks import LiveDPCAlignment, LiveMaps, ProgressBar  # noqa: E402
from xfct_bluesky.callbacks.reconstruction import LiveReconstruction  # noqa: E402

_interactive = matplotlib.get_backend().lower() != "agg"  # noqa: F821
RE.subscribe(ProgressBar())  # noqa: F821
live_maps = LiveMaps(("dpc_diag", "Zn"))
RE.subscribe(live_maps)  # noqa: F821
live_alignment = LiveDPCAlignment(emit=tiled_writer, plot=_interactive)  # noqa: F821
RE.subscribe(live_alignment)  # noqa: F821
# after the alignment: at a run's end it uses the alignment's final shifts
live_reconstruction = LiveReconstruction(emit=tiled_writer, alignment=live_alignment, elements=("Zn",),  # noqa: F821
                                         plot=_interactive)
RE.subscribe(live_reconstruction)  # noqa: F821
