"""The planner behind a websocket: `python -m vjepa_jax.serve` (server, needs JAX) and
`vjepa_jax.serve.client.PlannerClient` (NumPy, websockets and msgpack only).

Nothing is imported here, so that `import vjepa_jax.serve.client` stays free of JAX.
"""
