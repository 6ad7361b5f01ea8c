"""The `sync_target` activity: look up the target kind's driver and let it bring the target to a commit."""

from __future__ import annotations

import asyncio
import importlib

from temporalio import activity
from temporalio.exceptions import ApplicationError

from aicd.activities.drivers.base import (
    SyncFailed,
    SyncRequest,
    SyncResult,
    config_error,
    driver_for,
)
from aicd.errors import ErrorType

# Driver modules register themselves on import; a missing optional one is simply not available.
DRIVER_MODULES = ("aicd.activities.drivers.git", "aicd.activities.drivers.argocd", "aicd.activities.drivers.local")
for _module in DRIVER_MODULES:
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as _error:
        if _error.name != _module:
            raise


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
