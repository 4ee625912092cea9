"""Rotation-stage runout: what moves the specimen between projections.

Model (physics sheet section 5), per projection, in metres:

horizontal  dx = A1 sin(theta + p1) + sum_k A_k sin(k theta + p_k) + jitter + drift_x(t)
vertical    dy = W L sin(theta + pw) + sum_k B_k sin(k theta + q_k)  + jitter + drift_y(t)

A1 is the once-per-turn eccentricity, A_k (k = 2..4) the harmonics, W L the
wobble times its lever arm, the jitter white, and the thermal drift a random
walk plus a linear trend in acquisition time. Phases and all random terms come
from ``seed``, so the same sequence of (theta, time) gives the same offsets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..validate import finite, non_negative


@dataclass
class RunoutModel:
    """Seeded, reproducible rotation-stage runout.

    Parameters
    ----------
    eccentricity : float
        Once-per-turn horizontal amplitude A1 (m); 1-10 um typical.
    harmonics : tuple of float
        Horizontal amplitudes (m) of the 2nd, 3rd, ... harmonics (0.1-1 um).
    wobble : float
        Axis wobble (rad); 10-50 urad.
    lever_arm : float
        Distance (m) from the wobble pivot to the specimen; 20-50 mm.
    vertical_harmonics : tuple of float
        Vertical amplitudes (m) of the 2nd, 3rd, ... harmonics.
    jitter : float
        Random rms (m) per axis and projection; 20-200 nm.
    drift_rate : float
        Random-walk thermal drift (m per sqrt(hour)) per axis.
    drift_trend : (float, float)
        Linear drift (m/hour), (vertical, horizontal).
    seed : int
    """

    eccentricity: float = 3e-6
    harmonics: tuple[float, ...] = (0.3e-6, 0.2e-6, 0.1e-6)
    wobble: float = 20e-6
    lever_arm: float = 30e-3
    vertical_harmonics: tuple[float, ...] = (0.1e-6, 0.05e-6)
    jitter: float = 50e-9
    drift_rate: float = 0.3e-6
    drift_trend: tuple[float, float] = (0.1e-6, 0.3e-6)
    seed: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)
    _phases: np.ndarray = field(init=False, repr=False)
    _walk: np.ndarray = field(init=False, repr=False)
    _last_time: float = field(init=False, repr=False)

    def __post_init__(self):
        for name in ("eccentricity", "wobble", "lever_arm", "jitter", "drift_rate"):
            non_negative(name, getattr(self, name), fix="Runout amplitudes are magnitudes (>= 0).")
        self.reset()

    def reset(self) -> None:
        """Restart the random sequence from the seed (same offsets again)."""
        self._rng = np.random.default_rng([self.seed, 0x52554E])
        n = 2 + len(self.harmonics) + len(self.vertical_harmonics)
        self._phases = self._rng.uniform(0, 2 * math.pi, n)
        self._walk = np.zeros(2)
        self._last_time = 0.0

    def systematic(self, theta_deg) -> np.ndarray:
        """Repeatable part of the offset (m), (..., 2) as (dy, dx)."""
        t = np.radians(np.asarray(theta_deg, dtype=float))
        p = self._phases
        dx = self.eccentricity * np.sin(t + p[0])
        for k, a in enumerate(self.harmonics, start=2):
            dx = dx + a * np.sin(k * t + p[k])
        dy = self.wobble * self.lever_arm * np.sin(t + p[1])
        off = 2 + len(self.harmonics)
        for k, b in enumerate(self.vertical_harmonics, start=2):
            dy = dy + b * np.sin(k * t + p[off + k - 2])
        return np.stack([dy, dx], axis=-1)

    def sample(self, theta_deg: float, time_s: float) -> np.ndarray:
        """Offset (m), (dy, dx), of a projection at ``theta_deg`` started at ``time_s``.

        Advances the random walk: call once per projection, in acquisition order.
        """
        theta_deg = finite("theta", theta_deg, fix="Give the rotation angle in degrees.", unit=" deg")
        time_s = finite("time", time_s, fix="Acquisition time must be a finite number of seconds.", unit=" s")
        dt_h = max(time_s - self._last_time, 0.0) / 3600.0
        self._last_time = max(time_s, self._last_time)
        self._walk += self.drift_rate * math.sqrt(dt_h) * self._rng.standard_normal(2)
        trend = np.asarray(self.drift_trend) * (time_s / 3600.0)
        jitter = self.jitter * self._rng.standard_normal(2)
        return self.systematic(theta_deg) + self._walk + trend + jitter


def no_runout(seed: int = 0) -> RunoutModel:
    """A perfect rotation stage (for tests and reference runs)."""
    return RunoutModel(eccentricity=0.0, harmonics=(), wobble=0.0, vertical_harmonics=(), jitter=0.0,
                       drift_rate=0.0, drift_trend=(0.0, 0.0), seed=seed)
