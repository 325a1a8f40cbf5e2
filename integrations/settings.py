"""Checks of the settings users give the adapters by name: environment variables and command-line options.

A setting that comes from the environment or a command line reaches the adapter as text, far from where the user
typed it. Each check here raises a ``ValueError`` whose one-line message names the variable or option, the value
expected and the value given, so a launcher can print it as it is, before anything starts.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Optional, TypeVar, Union

import torch

from rankplug.stages.bank import check_device

#: rankplug's environment variables that are not adapter settings: read by ``rankplug.app`` (the Inception
#: weights and their cache) and by rankplug's own test suite and docs build. An adapter reading ``RANKPLUG_*``
#: settings leaves them alone.
OTHER_VARIABLES = (
    "RANKPLUG_CACHE",
    "RANKPLUG_INCEPTION_WEIGHTS",
    "RANKPLUG_REQUIRE_INCEPTION",
    "RANKPLUG_SKIP_DOCS_BUILD",
    "RANKPLUG_DCGAN_DIR",
    "RANKPLUG_STARGAN_DIR",
    "RANKPLUG_STYLEGAN2_ADA_DIR",
    "RANKPLUG_STUDIOGAN_DIR",
)

Device = TypeVar("Device", bound=Optional[Union[str, torch.device]])


def check_device_setting(value: Device, name: str) -> Device:
    """Return ``value`` (``None`` stays ``None``) if it names a device this machine has, else raise, naming ``name``
    (:func:`rankplug.stages.bank.check_device`).

    Example:
        >>> check_device_setting("cpu", "--bank-device")
        'cpu'
        >>> check_device_setting("foo", "RANKPLUG_BANK_DEVICE")
        Traceback (most recent call last):
        ...
        ValueError: RANKPLUG_BANK_DEVICE must be None or a device such as 'cpu', 'cuda' or 'cuda:0'; got 'foo'
    """
    check_device(value, name)
    return value


def check_weight_setting(value: float, name: str) -> float:
    """Return ``value`` if it is a finite number ``>= 0`` (a margin or a loss weight), else raise, naming ``name``.

    Example:
        >>> check_weight_setting(float("nan"), "--margin")
        Traceback (most recent call last):
        ...
        ValueError: --margin must be a finite number >= 0; got nan
    """
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value}")
    return value


def check_variable_names(environ: Mapping[str, str], known: Iterable[str], *, prefix: str = "RANKPLUG_") -> None:
    """Raise if ``environ`` sets a ``prefix`` variable that is neither ``known`` nor one of :data:`OTHER_VARIABLES`.

    A mistyped name would otherwise be ignored without a word; the error names it and the closest known name.

    Example:
        >>> check_variable_names({"RANKPLUG_CLAMPWEIGHT": "1"}, ["RANKPLUG_CLAMP_WEIGHT", "RANKPLUG_MARGIN"])
        Traceback (most recent call last):
        ...
        ValueError: unknown environment variable RANKPLUG_CLAMPWEIGHT; did you mean RANKPLUG_CLAMP_WEIGHT?
    """
    known = list(known)
    for name in sorted(environ):
        if not name.startswith(prefix) or name in known or name in OTHER_VARIABLES:
            continue
        # Compared without the prefix, which every name shares and which would make any name look close.
        close = difflib.get_close_matches(name.removeprefix(prefix), [k.removeprefix(prefix) for k in known], n=1)
        hint = f"did you mean {prefix}{close[0]}?" if close else f"the settings are {', '.join(known)}"
        raise ValueError(f"unknown environment variable {name}; {hint}")


__all__ = ["OTHER_VARIABLES", "check_device_setting", "check_variable_names", "check_weight_setting"]
