"""unisd_core.training: the explicit training loop, its checkpoints and its metric sinks.

Public entry points: :func:`train` -> :class:`TrainResult`; :class:`NonFiniteLossError`;
the :class:`MetricsSink` protocol with :class:`InMemorySink` and :class:`JsonlSink`.
"""

from unisd_core.training.errors import NonFiniteLossError
from unisd_core.training.loop import TrainResult, train
from unisd_core.training.metrics import FanOutSink, InMemorySink, JsonlSink, MetricsSink

__all__ = ["FanOutSink", "InMemorySink", "JsonlSink", "MetricsSink", "NonFiniteLossError",
           "TrainResult", "train"]
