"""The HTTP routes, a module per resource. Each module's routers carry the role their
routes need (api/deps.py); what several routes check alike is in api/query.py and
api/actions.py, so no route module imports another."""
