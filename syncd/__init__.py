"""syncd keeps mailing-provider groups equal to a source of truth."""

__version__ = "0.1.0"
