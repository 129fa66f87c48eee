"""Run a trigger in this process until its first event, with a bound on the wait."""

from __future__ import annotations

import asyncio
from typing import Any


def first_event(trigger: Any, timeout: float = 60) -> dict[str, Any]:
    """The payload of ``trigger``'s first event (its generator closed after it)."""

    async def first() -> dict[str, Any]:
        generator = trigger.run()
        event = await asyncio.wait_for(generator.__anext__(), timeout=timeout)
        await generator.aclose()
        return dict(event.payload)

    return asyncio.run(first())
