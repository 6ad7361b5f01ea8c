"""The `sync_target` activity: look up the target kind's driver and let it bring the target to a commit."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from aicd.activities.drivers import driver_for
from aicd.activities.drivers.base import SyncFailed, SyncRequest, SyncResult, config_error
from aicd.errors import ErrorType


@activity.defn(name="sync_target")
async def sync_target(request: SyncRequest) -> SyncResult:
    try:
        driver = driver_for(request.kind)
    except KeyError as error:
        raise config_error(str(error)) from None
    try:
        return await driver.sync(request, activity.heartbeat)
    except SyncFailed as error:
        raise ApplicationError(str(error), non_retryable=True, type=ErrorType.TARGET_UNHEALTHY) from error
    except asyncio.CancelledError:
        raise
