"""The webmail and the HTTP API (Starlette on uvicorn, in serve's event loop)."""
