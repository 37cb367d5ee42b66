"""Pictures that fit their canvas: titles and legend entries wrapped to the figure's width, and every PNG
saved with its bounding box around all it draws (so no title, legend or label is cut, whatever the
length of trainer and dataset names).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Union

#: Average width of a character of matplotlib's default font (DejaVu Sans), in ems, rounded up.
_CHAR_EM = 0.6
#: Margin kept around everything drawn, in inches.
PAD_INCHES = 0.15


def wrap_to_width(text: str, width_inches: float, fontsize: float) -> str:
    """``text`` with each line wrapped to fit ``width_inches`` at ``fontsize`` points (long words broken at
    '_' or '/', where trainer, dataset and path names break)."""
    chars = max(int(width_inches * 72 / (_CHAR_EM * fontsize)), 10)
    lines = []
    for line in str(text).split("\n"):
        current = ""
        for piece in re.split(r"(?<=[ _/])", line):  # break after spaces, '_' and '/'
            while len(piece) > chars:  # a piece longer than a line: cut it
                if current:
                    lines.append(current.rstrip())
                    current = ""
                lines.append(piece[:chars])
                piece = piece[chars:]
            if len(current) + len(piece.rstrip()) > chars and current:
                lines.append(current.rstrip())
                current = ""
            current += piece
        lines.append(current.rstrip())
    return "\n".join(lines)


def wrap_title(fig, text: str, fontsize: float) -> str:
    """``text`` wrapped to the width of ``fig``."""
    return wrap_to_width(text, fig.get_figwidth() * 0.96, fontsize)


def save_figure(fig, path: Union[str, Path], dpi: int) -> None:
    """Save with the canvas grown or trimmed to everything drawn plus a small margin; no timestamp in PNGs."""
    path = Path(path)
    metadata = {"Software": None} if path.suffix.lower() == ".png" else None
    fig.savefig(path, dpi=dpi, metadata=metadata, bbox_inches="tight", pad_inches=PAD_INCHES)


def check_figure_output(output: Union[str, Path], force: bool, example_name: str = "figure.png") -> Path:
    """``output`` as a Path, refused (UserError) when it is a folder, exists without ``force``, or has a suffix
    matplotlib cannot tell a format from; run before the work that the figure shows."""
    from matplotlib.figure import Figure

    from nnunet_subfore.errors import UserError

    output = Path(output)
    if output.is_dir():
        raise UserError(f"{output} is a folder: give the figure's file name, e.g. {output / example_name}.")
    if output.exists() and not force:
        raise UserError(f"{output} exists; pass --force to overwrite it.")
    formats = Figure().canvas.get_supported_filetypes()
    if output.suffix.lower().lstrip(".") not in formats:
        raise UserError(f"Cannot tell the figure format of {output}: use a suffix such as .png (one of {sorted(formats)}).")
    return output
