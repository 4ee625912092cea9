"""The dose-fractionation study: at equal total dose, few long projections against many short ones.

The founding paper ends on a promise it did not test: with DPC alignment, many
low-dose projections should give a higher 3D resolution than few high-dose ones
for no additional dose (Hegerl & Hoppe 1976), since a specimen D pixels across
needs about pi D / 2 angles over 180 degrees (Crowther et al. 1970).
:func:`dose_study` measures it. Each schedule (24 x 30 ms, 72 x 10 ms,
240 x 3 ms, 720 x 1 ms by default: the paper's 2.3e7 Gy) is taken of a 25 um
cell in a 128 px field of 300 nm (whole at every angle, with the stage's runout),
for several seeds, and reconstructed (MLEM) after alignment by
``align_projections(method="auto")`` on every map (DPC among them), by the Zn
maps alone, none, and the true shifts. Scores (:mod:`.measure`): resolution by
Fourier ring correlation at the half-bit threshold, between the even- and the
odd-angle halves and against the phantom; NRMSE and SSIM after the best scale
and rigid shift; the mean and spread over seeds (:meth:`StudyResult.summary`).

The tomographies come from the simulator driven directly (:mod:`.acquire`:
the same physics objects the simulated devices use), or with
``pipeline="bluesky"`` from ``xfct_tomo`` through a Session. The Zn maps are
the counts in Zn's energy window (ROI), or with ``fit=True`` the fitted counts
of each projection's spectra; the table says which ("Zn from fitted spectra",
"Zn from ROI window"). The full study is ``benchmarks/dose_study_full.py``.

Submodules: :mod:`.acquire` (phantom, tomographies), :mod:`.measure` (scores),
:mod:`.study` (:func:`dose_study`), :mod:`.report` (table, figure).
"""

from .acquire import PIXEL, phantom_zn, study_cell
from .measure import _register_to, compare, slab_correlation, slab_resolution
from .report import format_study, markdown_table, study_figure
from .study import (
           ALIGNMENTS,
           SCHEDULES,
           StudyCase,
           StudyResult,
           crowther_period,
           dose_study,
)

__all__ = [
           "ALIGNMENTS",
           "PIXEL",
           "SCHEDULES",
           "StudyCase",
           "StudyResult",
           "_register_to",
           "compare",
           "crowther_period",
           "dose_study",
           "format_study",
           "markdown_table",
           "phantom_zn",
           "slab_correlation",
           "slab_resolution",
           "study_cell",
           "study_figure",
]
