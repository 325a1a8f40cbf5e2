"""Stand-in for upstream ``dnnlib.util``: building objects from a dotted class path."""

from __future__ import annotations

import importlib
from typing import Any


class EasyDict(dict):
    """A dict whose keys are also attributes, as upstream's config objects are."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]


def get_obj_by_name(name: str) -> Any:
    """The object at a dotted path ``package.module.attr[.attr...]``, importing the longest module prefix."""
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # Only swallow "this prefix is not a module"; a missing dependency inside it must surface.
            if error.name is not None and module_name.startswith(error.name):
                continue
            raise
        for attr in parts[split:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"cannot import {name!r}: no importable module prefix")


def call_func_by_name(*args: Any, func_name: str, **kwargs: Any) -> Any:
    """Call the callable at ``func_name`` with the remaining arguments."""
    func = get_obj_by_name(func_name)
    if not callable(func):
        raise TypeError(f"{func_name!r} is not callable")
    return func(*args, **kwargs)


def construct_class_by_name(*args: Any, class_name: str, **kwargs: Any) -> Any:
    """Instantiate the class at ``class_name`` with the remaining arguments (upstream's signature)."""
    return call_func_by_name(*args, func_name=class_name, **kwargs)
