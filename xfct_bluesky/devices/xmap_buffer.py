"""The XIA xMAP's MCA-mapping buffer: the words one module sends per buffer, encoded (IOC) and decoded (flyer).

In MCA mapping mode (``CollectMode`` = "MCA mapping") an xMAP module fills buffer A with
``PixelsPerBuffer`` pixels, switches to buffer B, and the EPICS dxp driver publishes each full buffer
(and the last, partial one at the end of the run or on ``StopAll``) as an NDArray of 16-bit words,
which the file plugins (``netCDF1:``, ``HDF1:``) write and an NDStdArrays plugin (``image1:ArrayData``)
serves over Channel Access. The layout, as XIA's mapping-mode documentation gives it and the CARS
IDL reader ``decode_xmap_buffers.pro`` (EPICS dxp module's companion) decodes it:

* a 256-word buffer header: tag words ``0x55AA``, ``0xAA55``; header size (256); mapping mode (1 =
  full spectra); run number; buffer number (32 bits, low word first, words 5-6); buffer id (0 = A,
  1 = B); number of pixels in the buffer (word 8); starting pixel (32 bits, words 9-10); module
  number (11); channel ids (12-19); channel sizes, i.e. spectrum lengths, of the 4 detector elements
  (20-23); buffer errors (24);
* per pixel, a 256-word pixel header: tags ``0x33CC``, ``0xCC33``; header size; mapping mode; pixel
  number (32 bits, words 4-5); the pixel's block size in words (32 bits, 6-7); the 4 spectrum
  lengths (8-11); from word 32, 8 words per element: real time, live time (32 bits each, in ticks of
  320 ns), input counts (triggers) and output counts (events), 32 bits each;
* then the 4 elements' spectra, one 16-bit word per channel, element after element.

Every 32-bit value is low word first. The whole is one module (4 elements); a system of several
modules sends one such buffer per module (the NDArray's second dimension), not emulated here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CLOCK_TICK", "ELEMENTS_PER_MODULE", "HEADER_WORDS", "MappingBuffer", "decode_buffer", "encode_buffer"]

#: Seconds per tick of the real- and live-time counters in the pixel headers.
CLOCK_TICK = 320e-9
#: Words of the buffer header and of each pixel header.
HEADER_WORDS = 256
#: Detector elements per xMAP module.
ELEMENTS_PER_MODULE = 4
BUFFER_TAGS = (0x55AA, 0xAA55)
PIXEL_TAGS = (0x33CC, 0xCC33)


@dataclass
class MappingBuffer:
    """One decoded buffer: ``spectra`` (pixels, elements, channels) uint32; per pixel and element the real
    and live times (s), input and output counts; ``first_pixel``, ``buffer_number``, ``errors``."""

    first_pixel: int
    buffer_number: int
    spectra: np.ndarray
    real_time: np.ndarray
    live_time: np.ndarray
    input_counts: np.ndarray
    output_counts: np.ndarray
    pixel_numbers: np.ndarray
    errors: int

    @property
    def num_pixels(self) -> int:
        return int(self.spectra.shape[0])


def _put32(words: np.ndarray, at: int, value: int) -> None:
    value = int(value)
    if not 0 <= value < 2**32:
        raise ValueError(f"{value} does not fit the 32-bit field of an xMAP mapping buffer (0..{2**32 - 1})")
    words[at] = value & 0xFFFF
    words[at + 1] = value >> 16


def _get32(words: np.ndarray, at) -> np.ndarray:
    return words[at].astype(np.uint32) | (words[np.asarray(at) + 1].astype(np.uint32) << 16)


def encode_buffer(spectra, real_time, live_time, input_counts, output_counts, *, first_pixel: int = 0,
                  buffer_number: int = 0, run_number: int = 0) -> np.ndarray:
    """The uint16 words of one module's MCA-mapping buffer (see the module docstring).

    Parameters
    ----------
    spectra : array (pixels, 4, channels)
        Counts per channel; a count above 65535 (the 16-bit word) is clipped and flagged in the header's
        buffer-errors word, as the module's overflow.
    real_time, live_time : array (pixels, 4)
        Seconds, stored in ticks of :data:`CLOCK_TICK`.
    input_counts, output_counts : array (pixels, 4)
        Triggers and events per pixel and element.
    """
    spectra = np.asarray(spectra)
    if spectra.ndim != 3 or spectra.shape[1] != ELEMENTS_PER_MODULE:
        raise ValueError(f"spectra of shape {spectra.shape}: allowed (pixels, {ELEMENTS_PER_MODULE}, channels), "
                         "one module's 4 elements")
    n_pix, n_el, n_chan = spectra.shape
    block = HEADER_WORDS + n_el * n_chan
    words = np.zeros(HEADER_WORDS + n_pix * block, dtype=np.uint16)
    words[0:4] = (*BUFFER_TAGS, HEADER_WORDS, 1)
    words[4] = run_number
    _put32(words, 5, buffer_number)
    words[7] = buffer_number % 2
    words[8] = n_pix
    _put32(words, 9, first_pixel)
    words[11] = 0
    words[12:20] = np.repeat(np.arange(n_el), 2)
    words[20:24] = n_chan
    overflow = bool((spectra > 0xFFFF).any())
    words[24] = 1 if overflow else 0
    ticks = {"real": np.rint(np.asarray(real_time) / CLOCK_TICK), "live": np.rint(np.asarray(live_time) / CLOCK_TICK)}
    for p in range(n_pix):
        at = HEADER_WORDS + p * block
        words[at:at + 4] = (*PIXEL_TAGS, HEADER_WORDS, 1)
        _put32(words, at + 4, first_pixel + p)
        _put32(words, at + 6, block)
        words[at + 8:at + 12] = n_chan
        for e in range(n_el):
            q = at + 32 + 8 * e
            _put32(words, q, ticks["real"][p, e])
            _put32(words, q + 2, ticks["live"][p, e])
            _put32(words, q + 4, input_counts[p][e])
            _put32(words, q + 6, output_counts[p][e])
        words[at + HEADER_WORDS:at + block] = np.minimum(spectra[p], 0xFFFF).ravel()
    return words


def decode_buffer(words) -> MappingBuffer:
    """Decode one module's MCA-mapping buffer (uint16 words, or the int16 the NDArray's CA waveform carries).

    Raises
    ------
    ValueError
        Not a mapping buffer (its tag words), not full-spectrum mapping (mode 1), or shorter than its
        header says, naming what was found.
    """
    words = np.asarray(words).astype(np.int64).astype(np.uint16)  # int16 bit patterns -> uint16
    if words.size < HEADER_WORDS or tuple(int(w) for w in words[:2]) != BUFFER_TAGS:
        raise ValueError(f"not an xMAP mapping buffer: {words.size} words, tags "
                         f"{[hex(int(w)) for w in words[:2]]} (expected {[hex(t) for t in BUFFER_TAGS]})")
    if int(words[3]) != 1:
        raise ValueError(f"xMAP buffer of mapping mode {int(words[3])}; only 1 (MCA mapping, full spectra) is read")
    n_pix = int(words[8])
    n_chan = int(words[20])
    n_el = ELEMENTS_PER_MODULE
    block = HEADER_WORDS + n_el * n_chan
    need = HEADER_WORDS + n_pix * block
    if words.size < need:
        raise ValueError(f"xMAP buffer of {words.size} words, but its header says {n_pix} pixels of {block} words "
                         f"({need} words)")
    starts = HEADER_WORDS + np.arange(n_pix) * block
    if n_pix and not ((words[starts] == PIXEL_TAGS[0]) & (words[starts + 1] == PIXEL_TAGS[1])).all():
        raise ValueError("xMAP buffer: a pixel header lacks its tag words 0x33CC 0xCC33")
    stats = {}
    for name, off in (("real", 0), ("live", 2), ("icr", 4), ("ocr", 6)):
        at = starts[:, None] + 32 + 8 * np.arange(n_el)[None, :] + off
        stats[name] = _get32(words, at) if n_pix else np.zeros((0, n_el), np.uint32)
    spectra = np.stack([words[s + HEADER_WORDS:s + block].reshape(n_el, n_chan) for s in starts]).astype(np.uint32) \
        if n_pix else np.zeros((0, n_el, n_chan), np.uint32)
    return MappingBuffer(first_pixel=int(_get32(words, 9)), buffer_number=int(_get32(words, 5)), spectra=spectra,
                         real_time=stats["real"] * CLOCK_TICK, live_time=stats["live"] * CLOCK_TICK,
                         input_counts=stats["icr"], output_counts=stats["ocr"],
                         pixel_numbers=_get32(words, starts + 4) if n_pix else np.zeros(0, np.uint32),
                         errors=int(words[24]))
