"""Background work of a gateway process: periodic write-behind loops and task shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger("quota_gateway.background")


async def cancel_and_wait(task: asyncio.Task | None, attempts: int = 10) -> None:
    """Cancel a background task and wait until it has stopped. Cancels again if the task swallowed
    the cancellation (client libraries caught mid-command have been seen to), and gives up after
    `attempts` seconds rather than hang a shutdown."""
    if task is None:
        return
    for _ in range(attempts):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.done():
        log.warning("background task %s did not stop", task.get_name())
    elif not task.cancelled() and task.exception() is not None:
        log.warning("background task %s failed: %r", task.get_name(), task.exception())


class WriteBehindLoop:
    """Every `interval`, drains what this process touched; every `sweep_every`, drains everything
    (to finish what a dead process left behind). On stop, one last drain of what was touched.

    Subclasses provide `touched()`, `everything()` and `drain(targets)`; a failed cycle is logged
    and retried on the next one (the data waits in Redis meanwhile). Stopping lets a running cycle
    finish instead of cancelling it mid-command."""

    name = "write-behind"

    def __init__(self, interval: float, sweep_every: float = 30.0) -> None:
        self.interval = interval
        self.sweep_every = sweep_every
        self._task: asyncio.Task | None = None
        self._stopping = asyncio.Event()

    def touched(self) -> list:
        raise NotImplementedError

    async def everything(self) -> list:
        raise NotImplementedError

    async def drain(self, targets: list) -> int:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self, timeout: float = 10.0) -> None:
        if self._task is not None:
            self._stopping.set()
            await asyncio.wait({self._task}, timeout=timeout)
            await cancel_and_wait(self._task)  # only if the cycle is stuck (e.g. Redis unreachable)
        try:
            await self.drain(self.touched())
        except Exception as exc:
            log.warning("final %s drain failed (%s); the data stays in Redis for the next process", self.name, exc)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while not self._stopping.is_set():
            try:
                if loop.time() >= next_sweep:
                    await self.drain(await self.everything())
                    next_sweep = loop.time() + self.sweep_every
                else:
                    await self.drain(self.touched())
            except Exception:
                log.exception("%s cycle failed; will retry", self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)
