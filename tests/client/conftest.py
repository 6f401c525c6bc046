# The plugin's fixtures, also when tidelog is not pip-installed (its pytest11 entry point then is not loaded).
from tidelog.pytest_plugin import tidelog_broker, tidelog_broker_factory  # noqa: F401
