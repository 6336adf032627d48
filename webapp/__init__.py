"""The search page over one gallery store: FastAPI routes (app.py) over a service with no HTTP in it
(service.py: sessions, the store on one worker thread, the actions a person takes), Jinja2 templates
(templates/) and static files (static/), upload checks (uploads.py) and typed errors (errors.py).
`facematch web --store PATH` serves it."""
