"""ASGI middleware, one module each; the stack is assembled in app.py."""
