"""The instrumented callbacks dict: every callable is wrapped on its way in, by every route.

Ultralytics and its users fill callbacks dicts through ``append``, ``extend``, ``insert``, ``+=``,
item and slice assignment, ``d[event] = [...]`` (``clear_callback``, ``reset_callbacks``,
``set_callback``, the trainer's ``self.callbacks[k] = v.copy()``), ``copy.copy(d)`` and
``list.copy()``. Each route ends in :func:`~otel_callbacks.timing.instrument`, which is idempotent,
so a callback is wrapped exactly once whichever way it came in.
"""

from __future__ import annotations

import difflib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from copy import deepcopy
from typing import Any, SupportsIndex

from . import hooks, semconv
from .hooks import EVENTS
from .tracing.wrapper import instrument
from .ultralytics.defaults import default_callbacks as ultralytics_default_callbacks

logger = logging.getLogger(semconv.LOGGER_NAME)

_KNOWN_EVENTS = frozenset(EVENTS)
_checked: set[str] = set()  # custom event names already looked at (one warning each, bounded)
_CHECKED_MAX = 1024


def check_event(event: str) -> str:
    """Accept any event, as Ultralytics' ``defaultdict`` does: subclasses and integrations fire their
    own. A name within a small edit distance of one Ultralytics fires is likely a typo that would
    register a callback that never runs: warn once per name, naming the closest event."""
    if event in _KNOWN_EVENTS or event in _checked or not isinstance(event, str):
        return event
    if len(_checked) < _CHECKED_MAX:
        _checked.add(event)
    close = difflib.get_close_matches(event, EVENTS, n=1, cutoff=0.85)
    if close:
        logger.warning(
            "otel_callbacks: callbacks registered for %r, which Ultralytics never fires: did you mean %s? "
            "(a custom event runs only where your code calls run_callbacks(%r))",
            event,
            close[0],
            event,
        )
    return event


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

    Any event is accepted; one close to an event Ultralytics fires gets a warning (a likely typo).
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
        if self.default_factory is None:
            raise KeyError(event)
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
    return CallbackDict(list, deepcopy(ultralytics_default_callbacks() or hooks.default_callbacks))
