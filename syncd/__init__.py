"""syncd keeps call-center dialers in step with a CRM."""

from importlib import metadata


def _version() -> str:
    try:
        return metadata.version("syncd")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__version__ = _version()
