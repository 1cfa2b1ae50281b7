"""YMERA API: the Chalice app. Thin on purpose: routes live in chalicelib.api blueprints."""

from chalice import Chalice

from chalicelib.api import agent_types, agents, auth, health, tasks
from chalicelib.config import get_settings

# Fail the cold start, not the first request, when the environment is wrong.
get_settings()

app = Chalice(app_name="ymera")
app.register_blueprint(auth.bp)
app.register_blueprint(agents.bp)
app.register_blueprint(agent_types.bp)
app.register_blueprint(tasks.bp)
app.register_blueprint(health.bp)
