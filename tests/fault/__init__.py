"""Fault tests: real processes killed or stopped, seeded and bounded in time."""


def engine_config(client_id: int) -> str:
    """The config a fault test's engine runs with: throttles out of the way, a short drain."""
    return f"""
[risk]
max_orders_per_s = 1000
max_symbol_orders_per_s = 1000
duplicate_window_s = 0.001
[ibkr]
drain_s = 1.0
client_id = {client_id}
"""
