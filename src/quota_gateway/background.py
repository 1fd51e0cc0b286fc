"""Background work of a gateway process: periodic write-behind loops and task shutdown."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("quota_gateway.background")


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel a background task and wait until it has stopped, whatever it was doing."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass


class WriteBehindLoop:
    """Every `interval`, drains what this process touched; every `sweep_every`, drains everything
    (to finish what a dead process left behind). On stop, one last drain of what was touched.

    Subclasses provide `touched()`, `everything()` and `drain(targets)`; a failed cycle is logged
    and retried on the next one (the data waits in Redis meanwhile)."""

    name = "write-behind"

    def __init__(self, interval: float, sweep_every: float = 30.0) -> None:
        self.interval = interval
        self.sweep_every = sweep_every
        self._task: asyncio.Task | None = None

    def touched(self) -> list:
        raise NotImplementedError

    async def everything(self) -> list:
        raise NotImplementedError

    async def drain(self, targets: list) -> int:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        try:
            await self.drain(self.touched())
        except Exception as exc:
            log.warning("final %s drain failed (%s); the data stays in Redis for the next process", self.name, exc)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while True:
            try:
                if loop.time() >= next_sweep:
                    await self.drain(await self.everything())
                    next_sweep = loop.time() + self.sweep_every
                else:
                    await self.drain(self.touched())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s cycle failed; will retry", self.name)
            await asyncio.sleep(self.interval)
