"""The instrumented callbacks dict: every callable is wrapped on its way in, by every route.

Ultralytics and its users fill callbacks dicts through ``append``, ``extend``, ``insert``, ``+=``,
item and slice assignment, ``d[event] = [...]`` (``clear_callback``, ``reset_callbacks``,
``set_callback``, the trainer's ``self.callbacks[k] = v.copy()``), ``copy.copy(d)`` and
``list.copy()``. Each route ends in :func:`~otel_callbacks.timing.instrument`, which is idempotent,
so a callback is wrapped exactly once whichever way it came in.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from copy import deepcopy
from typing import Any, SupportsIndex

from . import hooks
from .hooks import EVENTS
from .timing import instrument

_KNOWN_EVENTS = frozenset(EVENTS)


def check_event(event: object) -> str:
    """Return ``event`` if Ultralytics fires it; else raise ``ValueError`` naming close matches."""
    if event in _KNOWN_EVENTS:
        return event  # type: ignore[return-value]
    close = difflib.get_close_matches(str(event), EVENTS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown callback event {event!r}.{hint} Ultralytics fires: {', '.join(EVENTS)}")


class CallbackList(list):
    """A list of callbacks for one event whose every element is an instrumented callback."""

    __slots__ = ("event",)

    def __init__(self, event: str, callbacks: Iterable[Callable[..., Any]] = ()) -> None:
        self.event = event
        super().__init__(self._wrap(cb) for cb in callbacks)

    def _wrap(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        return instrument(callback, self.event)

    def append(self, callback: Callable[..., Any]) -> None:
        super().append(self._wrap(callback))

    def extend(self, callbacks: Iterable[Callable[..., Any]]) -> None:
        super().extend([self._wrap(cb) for cb in callbacks])

    def insert(self, index: SupportsIndex, callback: Callable[..., Any]) -> None:
        super().insert(index, self._wrap(callback))

    def __iadd__(self, callbacks: Iterable[Callable[..., Any]]) -> CallbackList:  # type: ignore[override,misc]
        self.extend(callbacks)
        return self

    def __add__(self, callbacks: Iterable[Callable[..., Any]]) -> CallbackList:  # type: ignore[override]
        return CallbackList(self.event, [*self, *callbacks])

    def __setitem__(self, index: Any, value: Any) -> None:
        wrapped = [self._wrap(cb) for cb in value] if isinstance(index, slice) else self._wrap(value)
        super().__setitem__(index, wrapped)

    def copy(self) -> CallbackList:
        return CallbackList(self.event, self)

    __copy__ = copy

    def __reduce__(self) -> tuple[Any, ...]:
        # The default list pickling appends items before restoring ``event``; rebuild in one step.
        return CallbackList, (self.event, list(self))

    def __repr__(self) -> str:
        return f"CallbackList({self.event!r}, {list.__repr__(self)})"


class CallbackDict(defaultdict):
    """``defaultdict(list)`` whose lists are :class:`CallbackList`: a drop-in for Ultralytics' dict.

    An event Ultralytics never fires is refused with ``ValueError`` on first use, since a typo in
    ``add_callback`` would otherwise register a callback that silently never runs.
    """

    def __init__(
        self,
        default_factory: Callable[[], list] | None = list,
        callbacks: Mapping[str, Iterable[Callable[..., Any]]] | None = None,
        /,
        **kwargs: Iterable[Callable[..., Any]],
    ) -> None:
        if callbacks is None and isinstance(default_factory, Mapping):
            default_factory, callbacks = list, default_factory  # CallbackDict(mapping)
        super().__init__(default_factory)
        for event, value in {**(callbacks or {}), **kwargs}.items():
            self[event] = value

    def __missing__(self, event: str) -> CallbackList:
        value = self[event] = CallbackList(check_event(event))
        return value

    def __setitem__(self, event: str, callbacks: Iterable[Callable[..., Any]]) -> None:
        if not isinstance(callbacks, CallbackList) or callbacks.event != event:
            callbacks = CallbackList(check_event(event), callbacks)
        super().__setitem__(event, callbacks)

    def setdefault(self, event: str, default: Iterable[Callable[..., Any]] = ()) -> CallbackList:  # type: ignore[override]
        if event not in self:
            self[event] = default
        return self[event]

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for event, callbacks in dict(*args, **kwargs).items():
            self[event] = callbacks

    def copy(self) -> CallbackDict:
        """A shallow copy sharing the lists, as ``defaultdict.copy`` does."""
        new = CallbackDict(self.default_factory)
        dict.update(new, self)
        return new

    __copy__ = copy

    def __reduce__(self) -> tuple[Any, ...]:
        return CallbackDict, (self.default_factory, dict(self))

    def __repr__(self) -> str:
        return f"CallbackDict({dict.__repr__(self)})"


def get_default_callbacks() -> CallbackDict:
    """A fresh instrumented ``defaultdict(list)`` of the default callbacks: new lists, same hooks.

    While installed into Ultralytics, the hooks are Ultralytics' own, so that dicts Ultralytics
    resets (``reset_callbacks``) still compare equal to a fresh one, as they do without us.
    """
    from .ultralytics import default_callbacks

    return CallbackDict(list, deepcopy(default_callbacks() or hooks.default_callbacks))
