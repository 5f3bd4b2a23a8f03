"""Relais Chalice application: registers blueprints and middleware; nothing else."""

from chalice.app import Chalice

from chalicelib.events.dispatch import dispatch_events
from chalicelib.events.national import national_events
from chalicelib.routes.middleware import http_middleware
from chalicelib.routes.pharmacy import pharmacy_api

app = Chalice(app_name="relais")
app.debug = False
app.register_middleware(http_middleware, "http")
app.register_blueprint(pharmacy_api)
app.register_blueprint(dispatch_events)
app.register_blueprint(national_events)
