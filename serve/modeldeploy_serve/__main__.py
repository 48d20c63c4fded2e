"""``python -m modeldeploy_serve``."""

from __future__ import annotations

from .server import main

if __name__ == "__main__":
    raise SystemExit(main())
