"""Optional dependencies: the error that names the extra to install."""

from __future__ import annotations

__all__ = ["missing_extra"]


def missing_extra(extra: str, err: ImportError) -> ImportError:
    """An ImportError saying which extra of the package provides the module that ``err`` could not import."""
    return ImportError(f"{err.name or 'a dependency'} is missing: this part of pwgf needs the {extra!r} extra, pip install 'pwgf[{extra}]'")
