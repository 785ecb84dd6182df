"""Project exceptions: every error a user can act on is one of these.

The CLI prints their message without a traceback (unless ``--debug``); anything else is a bug.
"""


class SupirDataError(Exception):
    """Base class: a problem the user can fix (bad input, missing weights, bad config)."""


class ConfigError(SupirDataError):
    """A config file or option is invalid."""


class CatalogError(SupirDataError):
    """The catalog cannot answer or refuses a request (e.g. a write through `query`)."""


class MissingWeightsError(SupirDataError):
    """A model's weights are not available offline; the message names the file and where to put it."""


class InputImageError(SupirDataError):
    """An image cannot be used (too small, unsupported mode...); the message says why."""


class CheckpointError(SupirDataError):
    """A checkpoint cannot be imported or exported (missing/unknown/misshapen keys, unsafe pickle...)."""
