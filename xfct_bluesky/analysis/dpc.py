"""Differential phase contrast (DPC) from a segmented transmission detector.

A phase gradient in the specimen deflects the transmitted cone by an angle
alpha (rad), shifting the bright-field disc (angular radius NA, central
stop ratio r) on a four-quadrant detector by epsilon = alpha / NA. With
quadrants named by the side of the detector they sit on,

    q1 (+x, +y)    q2 (-x, +y)    q3 (-x, -y)    q4 (+x, -y),

the difference-over-sum signals are

    x        = (q1 + q4 - q2 - q3) / (q1 + q2 + q3 + q4) = (4/pi) eps_x / (1 + r)
    y        = (q1 + q2 - q3 - q4) / (q1 + q2 + q3 + q4) = (4/pi) eps_y / (1 + r)
    diagonal = (q1 - q3) / (q1 + q3)                     = (4 sqrt2/pi) eps_45 / (1 + r)

(small deflections; eps_45 = (eps_x + eps_y) / sqrt 2 is the deflection
along the +x+y bisector). The diagonal pair is what the DPC alignment paper
used (upper-right versus lower-left segments). Integrating the x and y
deflections over the scan gives the optical path (Frankot & Chellappa).

Functions: :func:`difference_over_sum`, :func:`dpc_from_segments`,
:func:`deflection`, :func:`integrate_gradients` and :func:`optical_path`.
Pixel rows run along +y and columns along +x, as in the simulator's maps.

References
----------
Hornberger, Feser & Jacobsen (2007), "Quantitative amplitude and phase
contrast imaging in a scanning transmission X-ray microscope",
Ultramicroscopy 107, 644-655, doi:10.1016/j.ultramic.2006.12.006.
Frankot & Chellappa (1988), IEEE Trans. PAMI 10, 439-451,
doi:10.1109/34.3909.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import fft as _fft

from ..validate import between, counts, one_of, positive, real

__all__ = [
    "QUADRANTS",
    "DPCMaps",
    "deflection",
    "difference_over_sum",
    "dpc_from_segments",
    "gain",
    "integrate_gradients",
    "optical_path",
]

QUADRANTS = ("q1", "q2", "q3", "q4")
DIRECTIONS = ("x", "y", "diagonal")


@dataclass(frozen=True)
class DPCMaps:
    """DPC signals of one map (or stack) from the four detector segments.

    Attributes
    ----------
    x, y, diagonal : float32 arrays
        Difference over sum (dimensionless, in [-1, 1]) or, when ``units``
        is ``"rad"``, the deflection angle along +x, +y and the +x+y
        bisector.
    total : float32 array
        q1 + q2 + q3 + q4 (counts): the bright-field (transmission) signal.
    units : {"dpc", "rad"}
    """

    x: np.ndarray
    y: np.ndarray
    diagonal: np.ndarray
    total: np.ndarray
    units: str = "dpc"


def difference_over_sum(a, b) -> np.ndarray:
    """(a - b) / (a + b) as float32; 0 where a + b == 0, without warnings.

    Parameters
    ----------
    a, b : array_like
        Counts (any real dtype, broadcastable); never modified. Computed in
        float64 so that large counts lose nothing before the float32 result.

    Returns
    -------
    float32 array of the broadcast shape.
    """
    a = real("a", a).astype(np.float64)
    b = real("b", b).astype(np.float64)
    s = a + b
    out = np.zeros(np.broadcast_shapes(a.shape, b.shape), dtype=np.float32)
    np.divide(a - b, s, out=out, where=s != 0, casting="unsafe")
    return out


def _segments(q1, q2, q3, q4):
    qs = []
    for name, q in zip(QUADRANTS, (q1, q2, q3, q4)):
        a = counts(name, q, fix="Segment counts are photon counts: give the raw counts of each segment "
                                      "(not dark- or background-subtracted maps, which can dip below zero)")
        if not np.isfinite(a).all():
            bad = np.argwhere(~np.isfinite(a))
            raise ValueError(f"{name} has {len(bad)} NaN or infinite count(s), the first at index "
                             f"{tuple(int(i) for i in bad[0])}; allowed: finite counts >= 0. Replace them "
                             "(e.g. by 0: a pixel with no counts gives DPC 0) or crop them out")
        qs.append(a)
    shapes = [a.shape for a in qs]
    if len(set(shapes)) != 1:
        raise ValueError(
            "segment maps differ in shape: "
            + ", ".join(f"{n}={s}" for n, s in zip(QUADRANTS, shapes))
            + "; give four maps of the same shape"
        )
    return [a.astype(np.float64) for a in qs]


def gain(direction: str = "x", central_stop_ratio: float = 0.4) -> float:
    """DPC signal per unit disc shift epsilon = alpha / NA (small deflections).

    ``(4/pi) / (1 + r)`` along x or y, ``(4 sqrt2/pi) / (1 + r)`` along the
    diagonal (per unit shift along the bisector).
    """
    one_of("direction", direction, DIRECTIONS)
    r = between("central_stop_ratio", central_stop_ratio, 0, 0.95, open_high=True,
                fix="Give the inner over outer radius of the bright-field annulus; 0 without a central stop.")
    g = 4 / math.pi / (1 + r)
    return g * math.sqrt(2) if direction == "diagonal" else g


def deflection(dpc, *, numerical_aperture: float, central_stop_ratio: float = 0.4, direction: str = "x"):
    """Deflection angle (rad) from a difference-over-sum DPC map.

    ``alpha = dpc / gain * NA``, with ``gain`` from :func:`gain`: linear in
    the small-deflection regime (|alpha| << NA) that a thin biological
    specimen gives.

    Parameters
    ----------
    dpc : array_like
        Difference over sum; never modified.
    numerical_aperture : float
        Probe NA (rad), ``Probe.numerical_aperture`` in the simulator.
    central_stop_ratio : float
        Inner over outer radius of the bright-field annulus, 0 <= r < 0.95
        (0.4 is the simulator's default detector).
    direction : {"x", "y", "diagonal"}
        Which DPC signal ``dpc`` is (the diagonal has a sqrt 2 larger gain).

    Returns
    -------
    float32 array
    """
    na = between("numerical_aperture", numerical_aperture, 0, 1, open_low=True, open_high=True, unit=" rad",
                 fix="Give the probe's NA: lambda / (2 drN) of the zone plate, 0.76e-3 for the paper's.")
    g = gain(direction, central_stop_ratio)
    d = np.asarray(dpc)
    return (d.astype(np.float64) * (na / g)).astype(np.float32)


def dpc_from_segments(q1, q2=None, q3=None, q4=None, *, numerical_aperture: float | None = None,
                      central_stop_ratio: float = 0.4) -> DPCMaps:
    """DPC x, y and diagonal signals from the four segment counts.

    Parameters
    ----------
    q1, q2, q3, q4 : array_like
        Counts of the (+x, +y), (-x, +y), (-x, -y), (+x, -y) segments, same
        shape (maps or stacks); never modified. Or pass a single mapping
        with keys "q1".."q4" (e.g. ``MapResult.maps``) as ``q1``. Real,
        finite and >= 0: negative, NaN or complex counts are refused naming
        the segment and the index.
    numerical_aperture : float, optional
        If given, convert to deflection angles in rad (:func:`deflection`).
    central_stop_ratio : float
        Used with ``numerical_aperture`` (0.4 is the simulator's default).

    Returns
    -------
    DPCMaps
        float32 ``x``, ``y``, ``diagonal`` (0 where the counts in the
        difference's denominator sum to 0) and ``total``.

    Examples
    --------
    >>> d = dpc_from_segments([3], [1], [0], [2])
    >>> float(d.x[0]), float(d.y[0]), float(d.diagonal[0])
    (0.6666666865348816, 0.3333333432674408, 1.0)
    """
    if isinstance(q1, Mapping):
        if q2 is not None or q3 is not None or q4 is not None:
            raise ValueError("give either one mapping with keys 'q1'..'q4' or four arrays, not both")
        missing = [k for k in QUADRANTS if k not in q1]
        if missing:
            raise ValueError(f"mapping lacks {missing}; it needs the segment maps 'q1', 'q2', 'q3', 'q4'")
        q1, q2, q3, q4 = (q1[k] for k in QUADRANTS)
    elif q2 is None or q3 is None or q4 is None:
        raise ValueError("give four segment maps q1, q2, q3, q4 (or one mapping with those keys)")
    a, b, c, d = _segments(q1, q2, q3, q4)
    x = difference_over_sum(a + d, b + c)
    y = difference_over_sum(a + b, c + d)
    diag = difference_over_sum(a, c)
    total = (a + b + c + d).astype(np.float32)
    if numerical_aperture is None:
        return DPCMaps(x, y, diag, total, "dpc")
    kw = {"numerical_aperture": numerical_aperture, "central_stop_ratio": central_stop_ratio}
    return DPCMaps(deflection(x, direction="x", **kw), deflection(y, direction="y", **kw),
                   deflection(diag, direction="diagonal", **kw), total, "rad")


def integrate_gradients(gx, gy, *, pixel_size: float = 1.0, workers: int | None = None) -> np.ndarray:
    """Integrate x and y gradient maps into the map they are the gradient of.

    Frankot-Chellappa least-squares integration in Fourier space, on the
    maps mirrored to twice their size so that the non-periodic borders do
    not wrap around: the mirrored map is continuous, its x gradient flips
    sign in the x mirror and its y gradient in the y mirror.

    Parameters
    ----------
    gx, gy : (..., ny, nx) array_like
        d/dx (along columns) and d/dy (along rows), per unit length;
        stacks are integrated map by map. Never modified.
    pixel_size : float
        Pixel pitch in that unit of length (1: gradients per pixel).
    workers : int, optional
        Threads for ``scipy.fft``.

    Returns
    -------
    float32 array (..., ny, nx)
        The integrated map with zero mean (the constant is lost).

    Notes
    -----
    The spectral derivative ``i k`` is used, so smooth (band-limited)
    gradients are integrated almost exactly; the least-squares fit also
    discards the curl (the part of noisy gradients no map can have).

    References
    ----------
    .. [1] R. T. Frankot and R. Chellappa, "A method for enforcing
           integrability in shape from shading algorithms," IEEE Trans.
           Pattern Anal. Mach. Intell. 10, 439-451 (1988).
           :DOI:`10.1109/34.3909`
    .. [2] P. Bon, S. Monneret and B. Wattellier, "Noniterative
           boundary-artifact-free wavefront reconstruction from its
           derivatives," Appl. Opt. 51, 5698-5704 (2012).
           :DOI:`10.1364/AO.51.005698`
    """
    gx = np.asarray(gx)
    gy = np.asarray(gy)
    if gx.shape != gy.shape or gx.ndim < 2:
        raise ValueError(f"gx has shape {gx.shape} and gy {gy.shape}; give two maps (..., ny, nx) of the same shape")
    if min(gx.shape[-2:]) < 2:
        raise ValueError(f"maps are {gx.shape[-2:]} px; integration needs at least 2 x 2")
    for name, g in (("gx", gx), ("gy", gy)):
        real(name, g)
        if not np.isfinite(g).all():
            raise ValueError(f"{name} contains NaN or infinity; replace them (e.g. by 0) first")
    h = positive("pixel_size", pixel_size, fix="Give the pixel pitch in the gradients' unit of length (1: per pixel).")
    ny, nx = gx.shape[-2:]
    ex = _mirror(gx.astype(np.float64), sign_x=-1, sign_y=1)
    ey = _mirror(gy.astype(np.float64), sign_x=1, sign_y=-1)
    kw = {"workers": -1 if workers is None else workers}
    Gx = _fft.rfft2(ex, **kw)
    Gy = _fft.rfft2(ey, **kw)
    ky = 2 * np.pi * np.fft.fftfreq(2 * ny, d=h)[:, None]
    kx = 2 * np.pi * np.fft.rfftfreq(2 * nx, d=h)[None, :]
    k2 = kx**2 + ky**2
    k2[0, 0] = 1.0
    F = (-1j * kx * Gx - 1j * ky * Gy) / k2
    F[..., 0, 0] = 0
    # Nyquist terms of an even length have no defined derivative sign: drop them
    F[..., ny, :] = 0
    F[..., :, nx] = 0
    out = _fft.irfft2(F, s=(2 * ny, 2 * nx), **kw)[..., :ny, :nx]
    out = out - out.mean(axis=(-2, -1), keepdims=True)
    return out.astype(np.float32)


def _mirror(g, sign_x, sign_y):
    """(..., 2ny, 2nx) half-sample-symmetric extension, odd along the gradient's own axis."""
    top = np.concatenate([g, sign_x * g[..., :, ::-1]], axis=-1)
    return np.concatenate([top, sign_y * top[..., ::-1, :]], axis=-2)


def optical_path(dpc_x, dpc_y, *, pixel_size: float, numerical_aperture: float,
                 central_stop_ratio: float = 0.4) -> np.ndarray:
    """Optical path map (m) from x and y DPC maps.

    The deflection angles (:func:`deflection`) are the gradients of the
    (probe-blurred) optical path decrement, integrated by
    :func:`integrate_gradients`: the result is, up to a constant, the
    integral of delta dz across the specimen (phase delay -2 pi / lambda
    times it).

    Parameters
    ----------
    dpc_x, dpc_y : (..., ny, nx) array_like
        Difference-over-sum DPC along x and y.
    pixel_size : float
        Scan step (m).
    numerical_aperture, central_stop_ratio : float
        As in :func:`deflection`.

    Returns
    -------
    float32 array (..., ny, nx), zero mean, in metres.
    """
    kw = {"numerical_aperture": numerical_aperture, "central_stop_ratio": central_stop_ratio}
    ax = deflection(dpc_x, direction="x", **kw)
    ay = deflection(dpc_y, direction="y", **kw)
    return integrate_gradients(ax, ay, pixel_size=pixel_size)
