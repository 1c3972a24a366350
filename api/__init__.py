"""cellsched.api: the REST submission API (FastAPI). Not built yet: see the open issues."""

__all__: list[str] = []
