"""The figures the commands write: sample plots, the inpainting grid, a raw PNG writer.

Every matplotlib figure carries a title that says what was run (sampler, steps, label, ...),
labelled axes where axes mean something, and images drawn large enough to read (an 8x8 digit
covers about 100x100 pixels). Without matplotlib, `write_png` writes the bare pixels.
"""

import pathlib
import struct
import textwrap
import zlib

import numpy as np

DPI = 100
MAX_GRID = 64  # images shown in a sample grid
MAX_INPAINT_ROWS = 16  # digits shown in the inpainting figure (all of them are in the .npz)
INPAINT_BLOCK = 8  # rows per block of the inpainting figure


def write_png(path, image, low: float = -1.0, high: float = 1.0):
    """One image `(channels, height, width)` with values in `[low, high]` as an 8-bit PNG
    (grey for one channel, RGB for three), written with the standard library only."""
    image = np.asarray(image, np.float64)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"an image must be (1 or 3, height, width); got shape {image.shape}")
    pixels = np.clip(np.rint((image - low) / (high - low) * 255), 0, 255).astype(np.uint8)
    channels, height, width = pixels.shape
    rows = np.moveaxis(pixels, 0, -1).reshape(height, width * channels)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 on every row

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    colour = 0 if channels == 1 else 2
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    pathlib.Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def png_size(path) -> tuple[int, int]:
    """`(width, height)` of the PNG at `path`, read from its header."""
    head = pathlib.Path(path).read_bytes()[:24]
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or `None` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def sample_title(sampler: str, steps: int, nfe: float, label=None, guidance=1.0) -> str:
    """The title of a sample plot: sampler, steps (or "adaptive"), mean NFE, label, guidance."""
    how = "adaptive steps" if sampler == "ode" else f"{steps} steps"
    title = f"{sampler}, {how}, mean NFE {nfe:.0f}"
    if label is not None:
        title += f"; label {label}, guidance {guidance:g}"
    return title


def plot_samples(x, path, title: str = "") -> bool:
    """A scatter plot (points, axes x[0] and x[1]) or a grid of the first 64 images (their first
    channel), titled "`n` samples: `title`"; `False` without matplotlib or for 1-D points."""
    plt = _pyplot()
    if plt is None:
        return False
    x = np.asarray(x)
    if x.ndim == 2 and x.shape[1] < 2:
        return False  # 1-D points: no scatter plot
    if x.ndim == 2:
        fig, ax = plt.subplots(figsize=(5, 5.3))
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("x[0]")
        ax.set_ylabel("x[1]")
        ax.grid(True, alpha=0.3)
        heading = f"{x.shape[0]} samples"
    else:
        n = min(MAX_GRID, x.shape[0])
        cols = min(8, n)
        rows = -(-n // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(max(4.0, 1.2 * cols), 1.2 * rows + 0.6),
                                 squeeze=False)  # fmt: skip
        for i, ax in enumerate(axes.flat):
            if i >= n:
                ax.axis("off")
                continue
            ax.imshow(np.clip(x[i, 0], -1, 1), cmap="gray", vmin=-1, vmax=1,
                      interpolation="nearest")  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():  # a thin frame: white pixels end at the edge
                spine.set_color("0.6")
        shown = "" if n == x.shape[0] else f" (first {n} of {x.shape[0]})"
        heading = f"samples{shown}"
    text = f"{heading}: {title}" if title else heading
    width = int(fig.get_size_inches()[0] * 12)  # characters of a 10-point line
    fig.suptitle(textwrap.fill(text, width), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def plot_inpainting(path, observed, completed, truth, mask, *, method: str, title: str,
                    labels=None) -> bool:  # fmt: skip
    """The inpainting figure: the first 16 digits in blocks of up to 8 rows, each block with the
    titled columns "observed" (hidden pixels red), "`method`" (its completion) and "truth";
    `labels` (the true classes) name the rows. `False` without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return False
    n = min(MAX_INPAINT_ROWS, truth.shape[0])
    rows = min(n, INPAINT_BLOCK)
    blocks = -(-n // rows)
    columns = ("observed", method, "truth")
    ratios = [r for b in range(blocks) for r in ((0.25,) if b else ()) + (1.0, 1.0, 1.0)]
    fig = plt.figure(figsize=(max(4.0, 0.95 * sum(ratios) + 0.5), 0.95 * rows + 1.1),
                     layout="constrained")  # fmt: skip
    grid = fig.add_gridspec(rows, len(ratios), width_ratios=ratios)
    hidden = np.broadcast_to(~np.asarray(mask, bool), truth.shape[1:])[0]
    for i in range(n):
        b, r = divmod(i, rows)
        grey = (np.clip(observed[i, 0], -1, 1) + 1) / 2
        shown = np.stack([grey] * 3, axis=-1)
        shown[hidden] = (0.8, 0.2, 0.2)  # the hidden pixels: not seen by the sampler
        for j, img in enumerate((shown, completed[i, 0], truth[i, 0])):
            ax = fig.add_subplot(grid[r, 4 * b + j])
            ax.set_xticks([])
            ax.set_yticks([])
            kw = {} if img.ndim == 3 else dict(cmap="gray", vmin=-1, vmax=1)
            ax.imshow(img if img.ndim == 3 else np.clip(img, -1, 1), interpolation="nearest", **kw)
            if r == 0:
                ax.set_title(columns[j], fontsize=9)
            if j == 0 and labels is not None:
                ax.set_ylabel(f"digit {int(labels[i])}", fontsize=8)
    more = "" if n == truth.shape[0] else f" (first {n} of {truth.shape[0]} digits shown)"
    fig.suptitle(title + more, fontsize=9)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True
