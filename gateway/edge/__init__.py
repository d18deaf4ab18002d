"""The HTTP front end: what a client can make the gateway hold before a request reaches the app.

`head` holds the pure rules for a request head (limits, framing, the method token);
`protocol` applies them in a uvicorn protocol subclass together with the client deadlines and
the per-worker connection budgets; `server` starts uvicorn with one or two listeners.
"""
