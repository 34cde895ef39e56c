"""Errors a user can cause: the CLI prints them as one line and exits with status 2."""


class GilabError(Exception):
    """Base class of the errors gilab reports to users without a traceback."""


class ImageError(GilabError, ValueError):
    """An image file that is missing, empty, truncated, not an image, or too large."""


class DataError(GilabError):
    """A dataset that is absent, incomplete or fails its checksum."""
