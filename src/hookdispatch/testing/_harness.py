"""StorageHarness: the per-test lifecycle the conformance classes share."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import ClassVar

from attrs import define, field

from ..exceptions import InvalidInputError
from ..storage import Storage
from ._spec import FactorySpec

__all__ = ["StorageHarness"]


@define
class _State:
    storage: Storage | None = None
    opened: list[Storage] = field(factory=list)
    tmp: Path | None = None


class StorageHarness:
    """What a backend author provides, and the per-test state built from it.

    Override :meth:`make_storage`; the rest is optional. Test runners (pytest) make a
    new instance for every test, so each test gets its own storages and temporary
    directory, closed and removed by :meth:`teardown_method`. If you override
    ``teardown_method``, call ``super().teardown_method(method)``.
    """

    supports_multiple_processes: ClassVar[bool] = False
    """Set to ``True`` if several processes may share one store; then
    :meth:`storage_factory_spec` must say how a process opens it."""

    def make_storage(self) -> Storage:
        """Return a new, empty storage. Called at least once per test, maybe more.

        Use :attr:`tmp_path` for files; it is removed after the test.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must define make_storage(self) returning a new,"
            " empty hookdispatch.storage.Storage"
        )

    def storage_factory_spec(self, storage: Storage) -> FactorySpec | None:
        """How to open ``storage``'s store again, in this process or another one.

        ``None`` (the default) skips the tests that need a second instance.
        """
        return None

    # Per-test state --------------------------------------------------------------

    def _hd_state(self) -> _State:
        state = self.__dict__.get("_hd_harness_state")
        if state is None:
            state = self.__dict__["_hd_harness_state"] = _State()
        assert isinstance(state, _State)
        return state

    @property
    def storage(self) -> Storage:
        """This test's storage, made by :meth:`make_storage` on first use."""
        state = self._hd_state()
        if state.storage is None:
            state.storage = self.new_storage()
        return state.storage

    def new_storage(self) -> Storage:
        """Another new, empty storage, closed after the test."""
        storage = self.make_storage()
        if not isinstance(storage, Storage):
            raise InvalidInputError(
                f"make_storage() returned {type(storage).__name__}; it must return an"
                " instance of a hookdispatch.storage.Storage subclass"
            )
        self._hd_state().opened.append(storage)
        return storage

    def open_again(self, storage: Storage) -> Storage | None:
        """A second instance on ``storage``'s store, or ``None`` if there is no spec."""
        spec = self.storage_factory_spec(storage)
        if spec is None:
            return None
        again = spec.open()
        self._hd_state().opened.append(again)
        return again

    @property
    def tmp_path(self) -> Path:
        """A temporary directory for this test, removed afterwards."""
        state = self._hd_state()
        if state.tmp is None:
            state.tmp = Path(tempfile.mkdtemp(prefix="hookdispatch-test-"))
        return state.tmp

    def teardown_method(self, method: object = None) -> None:
        """Close every storage this test opened and remove :attr:`tmp_path`."""
        state = self.__dict__.pop("_hd_harness_state", None)
        if not isinstance(state, _State):
            return
        try:
            for storage in reversed(state.opened):
                storage.close()
        finally:
            if state.tmp is not None:
                shutil.rmtree(state.tmp, ignore_errors=True)

    def tearDown(self) -> None:
        """:meth:`teardown_method`, for a subclass that is also a ``unittest.TestCase``."""
        self.teardown_method()
