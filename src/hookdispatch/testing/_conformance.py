"""StorageConformance: the whole suite, as one base class to subclass."""

from __future__ import annotations

from typing import Any, ClassVar

from ..storage import Storage
from ._concurrency import ConcurrencyTests
from ._contract import ContractTests
from ._expect import skip

__all__ = ["StorageConformance"]


class StorageConformance(ContractTests, ConcurrencyTests):
    """The storage conformance suite. Subclass it in a test module and say how to
    make your storage; every ``test_*`` method then runs against it::

        from hookdispatch.testing import StorageConformance

        class TestMyStorage(StorageConformance):
            def make_storage(self):
                return MyStorage()

    ``make_storage`` must return a new, empty store each time it is called (it is
    called several times by the model test); use :attr:`tmp_path` for files. Set
    ``supports_multiple_processes = True`` and define :meth:`storage_factory_spec`
    if processes may share your store. The tests are plain methods; pytest and
    unittest both honour the ``unittest.SkipTest`` a test raises to skip itself.

    The suite covers every point of the contract in ``hookdispatch.storage.Storage``:
    UTC datetimes, atomic and idempotent ``add_event``, exclusive claims with leases,
    lease expiry, the lease check in ``complete``, final states, disabled and excluded
    endpoints, ordering, the errors raised; claims from many threads (and processes)
    at once; and, with hypothesis installed, random sequences of operations compared
    against :class:`~hookdispatch.storage.MemoryStorage`.
    """

    model_settings: ClassVar[dict[str, Any]] = {"max_examples": 30, "stateful_step_count": 30}
    """Hypothesis settings for :meth:`test_behaves_like_the_reference_model`."""

    def test_behaves_like_the_reference_model(self) -> None:
        try:
            from hypothesis import HealthCheck, settings  # noqa: PLC0415
            from hypothesis.stateful import run_state_machine_as_test  # noqa: PLC0415

            from ._model import StorageStateMachine  # noqa: PLC0415
        except ImportError:
            skip("install hypothesis to compare the storage with the reference model")
        make_storage = self.new_storage

        class Machine(StorageStateMachine):
            def make_storage(self) -> Storage:
                return make_storage()

        run_state_machine_as_test(
            Machine,
            settings=settings(
                deadline=None, suppress_health_check=list(HealthCheck), **self.model_settings
            ),
        )
