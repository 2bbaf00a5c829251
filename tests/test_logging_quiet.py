"""The library logs to the ``hookdispatch`` logger and shows nothing by itself: with
logging unconfigured, a failing delivery prints nothing on stderr."""

from __future__ import annotations

import logging
import subprocess
import sys

import hookdispatch  # noqa: F401 - importing it installs the NullHandler


def test_the_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("hookdispatch").handlers
    assert any(isinstance(handler, logging.NullHandler) for handler in handlers)


def test_failed_deliveries_print_nothing_when_logging_is_unconfigured() -> None:
    code = (
        "import hookdispatch as hd\n"
        "hooks = hd.Dispatcher(storage=hd.MemoryStorage(), workers=0,\n"
        "    retry=hd.RetryPolicy(max_attempts=1), targets=hd.TargetPolicy.local())\n"
        "hooks.add_endpoint('http://127.0.0.1:9/hooks')  # nothing listens on port 9\n"
        "event = hooks.dispatch('user.created', {})\n"
        "[delivery] = hooks.deliveries(event_id=event.id)\n"
        "assert delivery.status is hd.DeliveryStatus.FAILED, delivery\n"
        "hooks.close()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
