"""``meer serve``: an HTTP API and a one-page web UI over a trained model.

Needs the ``serve`` extra (``pip install 'meer[serve]'``: Starlette, Uvicorn, python-multipart).
"""

from meer.web.app import Limits, create_app

__all__ = ["Limits", "create_app"]
