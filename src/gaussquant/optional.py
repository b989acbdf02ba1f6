"""Optional dependencies: import one, or fail with one sentence that names the extra to install.

``pip install gaussquant`` installs what training, conversion, encoding and decoding need. The rest comes
with extras (see ``pyproject.toml``): ``eval`` (SSIM/MS-SSIM, the EfficientNet-Lite0 features, report
plots), ``demo`` (everything ``gaussquant demo`` runs) and ``baselines`` (FSQ / LFQ from
vector-quantize-pytorch). ``pip install "gaussquant[all]"`` installs every extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingOptionalDependency", "import_optional"]


class MissingOptionalDependency(ImportError):
    """An optional package is not installed; the message says which extra provides it."""


def import_optional(module: str, *, package: str, extra: str, needed_for: str) -> ModuleType:
    """``importlib.import_module(module)``, or :class:`MissingOptionalDependency` naming ``extra``.

    Args:
        module: the import name, e.g. ``"pytorch_msssim"``.
        package: its distribution name on the package index, e.g. ``"pytorch-msssim"``.
        extra: the gaussquant extra that installs it, e.g. ``"eval"``.
        needed_for: what needs it, e.g. ``"SSIM and MS-SSIM"``.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and error.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there but one of *its* imports is broken: show that error as it is
        raise MissingOptionalDependency(
            f"{needed_for} needs the optional package {package}, which is not installed; "
            f"install it with: pip install \"gaussquant[{extra}]\""
        ) from error
