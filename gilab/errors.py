"""Errors a user can cause: the CLI prints them as one line and exits with status 2.

Each is also the built-in exception a Python caller would expect (``ValueError``, ``RuntimeError``, ...),
so ``except ValueError`` keeps working around gilab's own checks.
"""


class GilabError(Exception):
    """Base class of the errors gilab reports to users without a traceback."""


class ImageError(GilabError, ValueError):
    """An image file that is missing, empty, truncated, not an image, or too large; or an image tensor or
    array of the wrong shape, dtype or value range."""


class DataError(GilabError):
    """A dataset that is absent, incomplete or fails its checksum."""


class ArgumentError(GilabError, ValueError):
    """A parameter outside its range (a negative learning rate, a NaN budget, zero Gaussians, ...)."""


class FileFormatError(GilabError, ValueError):
    """A file gilab reads that is damaged, of another kind or version, or in a format it will not trust
    (a pickled checkpoint)."""


class NonFiniteError(GilabError, FloatingPointError):
    """NaN or infinity where a number must be finite: in an image, in Gaussians, or in a fit's loss."""


class BackendError(GilabError, RuntimeError):
    """A render backend that this machine cannot run (no CUDA for gsplat, no numba for cpu, ...)."""
