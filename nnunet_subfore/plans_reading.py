"""Reading nnU-Net plans: the file, whether a configuration exists, the configuration with ``inherits_from``
resolved, its patch and spacing. The one place that answers "does this configuration exist in these
plans" (no nnU-Net import: the masking set-up and the intensity mapping use it too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Tuple

from nnunet_subfore.errors import UserError


class ConfigurationNotFound(UserError, KeyError):
    """The plans have no such configuration (a :class:`UserError`, and a ``KeyError`` for callers that look
    up plans entries)."""

    def __str__(self) -> str:  # KeyError quotes its message; a UserError prints it as it is
        return str(self.args[0]) if self.args else ""


def read_plans(path: Path) -> dict:
    """The content of an nnU-Net plans file; a clear error for a missing file or one that is not plans JSON."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Plans file {path} does not exist (nnUNetv2_plan_and_preprocess writes "
                        f"$nnUNet_preprocessed/DatasetXXX_NAME/nnUNetPlans.json).")
    try:
        plans = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a JSON file ({e}); pass the plans JSON nnU-Net wrote (e.g. nnUNetPlans.json).") from e
    if not isinstance(plans, dict) or "configurations" not in plans:
        raise UserError(f"{path} holds no nnU-Net plans (no 'configurations'); pass e.g. nnUNetPlans.json.")
    return plans


def require_configuration(plans: Mapping, name: str, source: str = "The plans") -> None:
    """Raise :class:`ConfigurationNotFound` (naming the available ones) unless ``plans`` has configuration ``name``."""
    configurations = plans.get("configurations", {})
    if name not in configurations:
        raise ConfigurationNotFound(f"{source} have no configuration {name!r} (available: {sorted(configurations)}).")


def resolve_configuration(configurations: Mapping, name: str) -> dict:
    """Configuration dict with nnU-Net's ``inherits_from`` resolved."""
    config = dict(configurations[name])
    parent = config.pop("inherits_from", None)
    if parent is None:
        return config
    merged = resolve_configuration(configurations, parent)
    merged.update(config)
    return merged


def configuration(plans: Mapping, name: str, source: str = "The plans") -> dict:
    """The configuration ``name`` of ``plans``, ``inherits_from`` resolved; :class:`ConfigurationNotFound` if absent."""
    require_configuration(plans, name, source)
    return resolve_configuration(plans["configurations"], name)


def planned_patch(plans: Mapping, name: str, source: str = "The plans") -> Tuple[int, ...]:
    """The configuration's planned patch size."""
    return tuple(int(p) for p in configuration(plans, name, source)["patch_size"])


def planned_spacing(plans: Mapping, name: str, source: str = "The plans") -> Tuple[float, ...]:
    """The configuration's target spacing."""
    return tuple(float(s) for s in configuration(plans, name, source)["spacing"])
