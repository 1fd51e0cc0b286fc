"""Background loops stop cleanly: a finishing cycle is let finish, a swallowed cancellation is retried."""

from __future__ import annotations

import asyncio

from quota_gateway.background import WriteBehindLoop, cancel_and_wait


async def test_cancel_and_wait_cancels_again_when_a_task_swallows_cancellation():
    swallowed = []

    async def stubborn():
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:  # as a client library caught mid-command may do
            swallowed.append(True)
        await asyncio.sleep(60)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), 5)
    assert swallowed == [True] and task.cancelled()


class _Recorder(WriteBehindLoop):
    name = "recorder"

    def __init__(self) -> None:
        super().__init__(interval=0.01, sweep_every=3600)
        self.drained: list[list] = []
        self.pending = ["a"]
        self.in_cycle = asyncio.Event()

    def touched(self) -> list:
        taken, self.pending = self.pending, []
        return taken

    async def everything(self) -> list:
        return ["everything"]

    async def drain(self, targets: list) -> int:
        self.in_cycle.set()
        await asyncio.sleep(0.05)  # a cycle in progress when stop() is called is not cut short
        self.drained.append(targets)
        return len(targets)


async def test_write_behind_loop_sweeps_first_then_drains_touched_and_finishes_on_stop():
    loop = _Recorder()
    loop.start()
    await loop.in_cycle.wait()
    loop.pending = ["b"]
    await asyncio.wait_for(loop.stop(), 5)
    assert loop.drained[0] == ["everything"]
    assert ["b"] in loop.drained  # drained by a cycle or by the final drain, never lost
    assert loop._task.done() and not loop._task.cancelled()
