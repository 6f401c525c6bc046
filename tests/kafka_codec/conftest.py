import os
import sys

from hypothesis import HealthCheck, settings

# The suite runs from a plain checkout too (no `pip install -e .`).
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

settings.register_profile("kafka_codec", deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "kafka_codec"))
