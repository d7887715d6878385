"""Errors that the command-line tools report as one clear line instead of a stack trace."""


class GenArenaError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class ConfigError(GenArenaError):
    """A config value that is unknown, of the wrong kind, or inconsistent with another."""


class DataError(GenArenaError):
    """A dataset that is missing, empty or cannot be downloaded."""


class CheckpointError(GenArenaError):
    """A checkpoint that is missing, corrupt, or of the wrong kind."""


class IncompatibleTokenizerError(ConfigError):
    """A generator paired with a tokenizer of a kind it cannot model (its head or its order)."""


class NonFiniteError(GenArenaError):
    """A training loss or gradient norm that became NaN or infinite: the run diverged and stops at that step."""
