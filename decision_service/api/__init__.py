"""The HTTP interface (Litestar): one module per resource, wired in `app.py`."""
