"""HTTP edge of the hub: thin routers that parse, call the domain, and map errors."""
