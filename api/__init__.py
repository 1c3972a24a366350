"""cellsched.api: the REST API (FastAPI), served by `cellsched api` (docs/architecture.md, "The REST API")."""

from .app import create_app
from .auth import Principal, RateLimiter, Role, TokenTable
from .context import ApiContext
from .models_cell import MachineIn, MachinesIn
from .models_jobs import BulkIn, JobIn, Resources, TaskGroupIn

__all__ = [
    "ApiContext",
    "BulkIn",
    "JobIn",
    "MachineIn",
    "MachinesIn",
    "Principal",
    "RateLimiter",
    "Resources",
    "Role",
    "TaskGroupIn",
    "TokenTable",
    "create_app",
]
