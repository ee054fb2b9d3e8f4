"""Progress of a render: the reference's "N% done" lines, and simulate(progress=...).

The reference counts the pixels it renders (inside -roi, not masked) in
raster order (slow, then fast) and, after rendering pixel number p (from
0), prints ``"%d% done" % (100 * p // P)`` when

* p is a multiple of P // 20, or
* p is a multiple of P // 100 in the first or the last tenth (10 p < P or
  10 p > 9 P),

where P = (roi_xmax - roi_xmin + 1) * (roi_ymax - roi_ymin + 1) with the
region's defaults (0 and the pixel counts: P is one row and one column more
than the detector, as the reference computes it), and nothing at all when
P < 100, with -noprogress, or with -printout (whose lines replace these).
Each line is printed once, in order, whatever the thread count or the timing
of the updates: the text depends only on the setup.

The engine reports progress as (pixels done in raster order, total);
:class:`ReferenceMeter` turns that into the reference's lines, and
:func:`callback` adapts simulate(progress=...): a callable taking (done,
total), True for a tqdm bar, or a tqdm bar (tqdm is imported only then).
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable, List, Optional, Sequence

__all__ = ["milestones", "ReferenceMeter", "callback"]


def milestones(progress_pixels: int, rendered: int) -> List[int]:
    """The counter values p < rendered after which the reference prints a line, in order."""
    P = int(progress_pixels)
    hundredth, twentieth = P // 100, P // 20
    if hundredth <= 0 or rendered <= 0:
        return []
    marks = set(range(0, rendered, twentieth))
    edge = range(0, rendered, hundredth)
    marks.update(p for p in edge if 10 * p < P or 10 * p > 9 * P)
    return sorted(marks)


class ReferenceMeter:
    """Prints the reference's "N% done" lines as the render advances.

    ``fpixels``, ``spixels``: the detector; ``roi``: (xmin, xmax, ymin, ymax)
    with the reference's defaults applied (inclusive bounds); ``mask``: the
    mask in raster order (0 = skipped) or None; ``write``: takes one line
    without its newline.  Call :meth:`update` with the number of pixels done
    in raster order (skipped ones included), as often as convenient, and
    :meth:`finish` at the end.
    """

    def __init__(self, fpixels: int, spixels: int, roi: Sequence[int], write: Callable[[str], None],
                 mask: Optional[Any] = None):
        self.fpixels, self.spixels = int(fpixels), int(spixels)
        self.xmin, self.xmax, self.ymin, self.ymax = (int(v) for v in roi)
        self.write = write
        self._cum = None
        if mask is not None:
            import numpy as np
            inside = np.zeros((self.spixels, self.fpixels), dtype=bool)
            inside[max(self.ymin, 0):self.ymax + 1, max(self.xmin, 0):self.xmax + 1] = True
            inside &= np.asarray(mask).reshape(self.spixels, self.fpixels) != 0
            self._cum = np.concatenate(([0], np.cumsum(inside.ravel(), dtype=np.int64)))
        self.total = self.rendered_before(self.fpixels * self.spixels)
        progress_pixels = (self.xmax - self.xmin + 1) * (self.ymax - self.ymin + 1)
        self._marks = milestones(progress_pixels, self.total)
        self._progress_pixels = progress_pixels
        self._next = 0          # index into _marks of the next line to print

    def _cols(self, n: int) -> int:
        """Rendered columns among the first n of a row inside the region."""
        lo, hi = max(self.xmin, 0), min(self.xmax, self.fpixels - 1)
        return max(0, min(n - 1, hi) - lo + 1)

    def rendered_before(self, raster: int) -> int:
        """How many pixels the reference has rendered before raster index ``raster``."""
        raster = max(0, min(int(raster), self.fpixels * self.spixels))
        if self._cum is not None:
            return int(self._cum[raster])
        rows, col = divmod(raster, self.fpixels)
        lo, hi = max(self.ymin, 0), min(self.ymax, self.spixels - 1)
        full_rows = max(0, min(rows - 1, hi) - lo + 1)
        n = full_rows * self._cols(self.fpixels)
        if lo <= rows <= hi:
            n += self._cols(col)
        return n

    def update(self, raster_done: int, total: Optional[int] = None) -> None:
        """Print every line due once ``raster_done`` pixels (raster order) are done."""
        done = self.rendered_before(raster_done)
        marks, P = self._marks, self._progress_pixels
        while self._next < len(marks) and marks[self._next] < done:
            self.write("%d%% done" % (marks[self._next] * 100 // P))
            self._next += 1

    def finish(self) -> None:
        self.update(self.fpixels * self.spixels)


def callback(progress: Any) -> Optional[Callable[[int, int], None]]:
    """simulate(progress=...) -> a (done, total) callback, or None when off.

    ``progress``: None/False (off, the default), a callable taking (done,
    total), True (a tqdm bar, closed when done reaches total) or a tqdm-like
    bar (has ``update``; its total is set from the render)."""
    if progress is None or progress is False:
        return None
    if progress is True:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            raise ImportError("simulate(progress=True) needs tqdm: pip install tqdm "
                              "(or pass a callable taking (done, total))") from None
        progress = tqdm(unit="px", desc="nanoBragg")
        owned = True
    else:
        owned = False
    if hasattr(progress, "update") and not callable(progress):
        bar = progress

        def poll(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
                if hasattr(bar, "refresh"):
                    bar.refresh()
            if done > bar.n:
                bar.update(done - bar.n)
            if owned and done >= total and hasattr(bar, "close"):
                bar.close()
        return poll
    if callable(progress):
        return lambda done, total: progress(int(done), int(total))
    raise TypeError(f"progress: expected a callable taking (done, total), True or a tqdm bar, got {progress!r}")
