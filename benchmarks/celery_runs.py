"""Running the Celery peer: the Redis broker, the worker process, the end-to-end rate.

Redis: the server on 127.0.0.1:6379 when one answers; otherwise one started from
Debian's ``redis-server`` package (installed with apt-get when missing and we are
root) on 127.0.0.1, without persistence, and stopped at the end. The worker is a
subprocess on the sender core, like the rest of the sender. End to end means from
the first ``.delay()`` to the moment the receiver has answered every POST.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from .harness import DATA, EVENT_TYPE, Deadline, Run, log, process_cpu, unpin
from .receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
BROKER_DB = 11  # a database of its own on a shared server; its queue is removed after


def _answers(port: int) -> str | None:
    """The server's version when Redis answers PING on 127.0.0.1:port."""
    import redis

    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        client.ping()
        return str(client.info("server")["redis_version"])
    except redis.RedisError:
        return None


def _install() -> str | None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    log("  Redis: installing Debian's redis-server package (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "redis-server"],
    ):
        subprocess.run(command, env=env, check=False, timeout=600, capture_output=True)
    return shutil.which("redis-server")


@contextlib.contextmanager
def redis_server(port: int = 6379) -> Iterator[tuple[str, str] | None]:
    """``(broker URL, server version)``, or None when no Redis can be had."""
    url = f"redis://127.0.0.1:{port}/{BROKER_DB}"
    version = _answers(port)
    if version is not None:
        yield url, version
        return
    binary = shutil.which("redis-server") or _install()
    if (version := _answers(port)) is not None:  # the package install started it
        try:
            yield url, version
        finally:
            _shutdown(port)
        return
    if binary is None:
        log("  Redis: no server on 127.0.0.1 and no redis-server to start; Celery skipped")
        yield None
        return
    log(f"  Redis: starting {binary} on 127.0.0.1:{port} for this run")
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    unpin(process.pid)  # a server, like the machine's own: not on the sender core
    try:
        for _ in range(100):
            if (version := _answers(port)) is not None:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("redis-server did not answer within 10 s")
        yield url, version
    finally:
        process.terminate()
        process.wait(timeout=10)


def _shutdown(port: int) -> None:
    import redis

    with contextlib.suppress(redis.RedisError):
        redis.Redis(host="127.0.0.1", port=port).shutdown(nosave=True)


def configure(broker: str) -> ModuleType:
    """Import the peer's task module for this process, on ``broker`` and a queue of its own."""
    os.environ["HOOKDISPATCH_BENCH_BROKER"] = broker
    os.environ["HOOKDISPATCH_BENCH_QUEUE"] = f"hookdispatch-bench-{os.getpid()}"
    from . import celery_peer

    return celery_peer


def forget(peer: ModuleType) -> None:
    """Remove what kombu left in Redis for this run's queue (its bindings)."""
    import redis

    client = redis.Redis.from_url(peer.BROKER)
    with contextlib.suppress(redis.RedisError):
        keys = list(client.scan_iter(match=f"_kombu.binding*.{peer.QUEUE}"))
        if keys:
            client.delete(*keys, peer.QUEUE)
        if not any(client.scan_iter(match="_kombu.binding.*")):  # no other queue uses it
            client.delete("_kombu.binding_deadlines")


class Worker:
    """``celery worker --pool threads --concurrency N`` on the peer's queue."""

    def __init__(self, peer: ModuleType, receiver: Receiver, concurrency: int) -> None:
        self.peer = peer
        self.receiver = receiver
        self.concurrency = concurrency
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__

    def __enter__(self) -> Worker:
        env = {**os.environ, "HOOKDISPATCH_BENCH_CONNECTIONS": str(self.concurrency)}
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "benchmarks.celery_peer", "worker"),
                *("--pool", "threads", "--concurrency", str(self.concurrency)),
                *("--loglevel", "WARNING", "--without-gossip", "--without-mingle"),
                *("--without-heartbeat", "--queues", self.peer.QUEUE),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,  # its warnings (say, about running as root) stay out of ours
        )
        # Ready when it has delivered a first batch (this also opens its connections).
        warm = min(self.concurrency, 64)
        before = self.receiver.count()
        for _ in range(warm):
            self.peer.send_webhook.delay(self.receiver.url, EVENT_TYPE, DATA)
        deadline = Deadline(60)
        while self.receiver.count() - before < warm:
            if deadline.expired or self.process.poll() is not None:
                self.__exit__()
                self.log.seek(0)
                tail = self.log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"the Celery worker did not deliver within 60 s:\n{tail}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.terminate()  # warm shutdown: finishes the tasks it holds
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.purge()
        self.log.close()

    def purge(self) -> None:
        with self.peer.app.connection_for_write() as connection:
            connection.default_channel.queue_purge(self.peer.QUEUE)

    def cpu(self) -> float:
        assert self.process is not None
        return process_cpu(self.process.pid)

    def wait(self, answered: int, deadline: Deadline) -> int:
        """Wait until the receiver's count reaches ``answered``; return how far it got."""
        while (now := self.receiver.count()) < answered and not deadline.expired:
            time.sleep(0.01)
        return min(now, answered)

    def end_to_end(self, count: int, limit: float) -> Run:
        """``count`` ``.delay()`` calls; done when the receiver has answered them all."""
        send = self.peer.send_webhook.delay
        url = self.receiver.url
        before = self.receiver.count()
        cpu, worker_cpu = time.process_time(), self.cpu()
        deadline = Deadline(limit)
        sent = 0
        while sent < count and not deadline.expired:
            send(url, EVENT_TYPE, DATA)
            sent += 1
        enqueue = (time.perf_counter() - deadline.began) / max(sent, 1)
        delivered = self.wait(before + sent, deadline) - before
        elapsed = time.perf_counter() - deadline.began
        cpu = time.process_time() - cpu + self.cpu() - worker_cpu
        if delivered < count:  # cut: drop what is left so the next run starts clean
            self.purge()
            time.sleep(1)
        return Run(
            delivered / elapsed,
            cut=delivered < count,
            cpu_us=cpu / max(delivered, 1) * 1e6,
            enqueue_us=enqueue * 1e6,
        )
