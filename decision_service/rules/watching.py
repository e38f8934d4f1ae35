"""Watching the rules directory: a daemon thread that reloads the registry on every change
to its *.yaml files and survives any error (logged and counted in `watch_errors`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from decision_service.rules.registry import ReloadResult

log = structlog.get_logger("decision_service.rules")


class WatchesRuleFiles:
    """The file-watching half of RuleRegistry, which sets these attributes and `reload`."""

    path: Path
    watch_errors: int
    _watch_stop: threading.Event | None
    _watch_thread: threading.Thread | None
    reload: Callable[[], ReloadResult]

    def start_watching(self, on_result=None) -> threading.Thread:
        """Reload on every change to the rule files, from a daemon thread that survives any
        error: it is logged, counted in `watch_errors`, and watching goes on."""
        import watchfiles

        if self._watch_thread is not None:
            return self._watch_thread
        stop = threading.Event()

        def run() -> None:
            while not stop.is_set():
                try:
                    for _changes in watchfiles.watch(
                        self.path, stop_event=stop, watch_filter=_yaml_filter, debounce=200
                    ):
                        self._watched_reload(on_result)
                except Exception:
                    self.watch_errors += 1
                    log.exception("rules_watch_failed", path=str(self.path))
                    stop.wait(1.0)  # e.g. the directory is being replaced: try again

        self._watch_stop = stop
        self._watch_thread = threading.Thread(target=run, name="rules-watch", daemon=True)
        self._watch_thread.start()
        return self._watch_thread

    def _watched_reload(self, on_result) -> None:
        try:
            result = self.reload()
            if not result.ok:
                self.watch_errors += 1
            if on_result is not None:
                on_result(result)
        except Exception:
            self.watch_errors += 1
            log.exception("rules_watch_reload_failed", path=str(self.path))

    def stop_watching(self) -> None:
        if self._watch_stop is not None:
            self._watch_stop.set()
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=5)
        self._watch_stop = self._watch_thread = None


def _yaml_filter(_change: Any, path: str) -> bool:
    return path.endswith(".yaml")
