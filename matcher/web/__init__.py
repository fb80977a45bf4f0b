"""The private web check: a FastAPI app over :mod:`matcher.engine.api` (``matcher serve``).

Photos are hashed in the browser (``static/hasher.js``); only hashes reach the server.
"""
