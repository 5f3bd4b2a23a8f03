"""Relais Chalice application: registers blueprints and middleware; nothing else."""

from chalice.app import Chalice

from chalicelib.events.audit import audit_events
from chalicelib.events.dispatch import dispatch_events
from chalicelib.events.national import national_events
from chalicelib.events.notify import notify_events
from chalicelib.routes.methods import other_methods
from chalicelib.routes.middleware import http_middleware
from chalicelib.routes.patient import patient_api, patient_headers
from chalicelib.routes.pharmacy import pharmacy_api

app = Chalice(app_name="relais", configure_logs=False)  # debug stays off (its setter would set the "relais"
# logger, the Powertools one, to ERROR: INFO lines would vanish if it was built first)
app.api.binary_types.append("application/pdf")  # the paper slip (POST /v1/results/{id}/slip)
app.register_middleware(patient_headers, "http")  # outermost: security headers on every patient response
app.register_middleware(http_middleware, "http")
app.register_blueprint(pharmacy_api)
app.register_blueprint(dispatch_events)
app.register_blueprint(audit_events)
app.register_blueprint(national_events)
app.register_blueprint(patient_api)
app.register_blueprint(notify_events)
app.register_blueprint(other_methods)  # last: 405 for every method a path does not serve (not API Gateway's 403)
