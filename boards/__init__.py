"""vitaccel.boards: board targets, the fit check, the board top with its UART host link, and the
build and estimate flows (see docs/architecture.md and each module's docstring).

Public API: :data:`BOARDS`, :func:`board_config`, :func:`check_fit` (:class:`FitError`),
:func:`build` (:class:`BuildFailed`), :func:`estimate`.
"""

from .build import BuildFailed, build
from .synth import estimate
from .targets import BOARDS, FitError, board_config, check_fit

__all__ = ["BOARDS", "FitError", "BuildFailed", "board_config", "check_fit", "build", "estimate"]
