"""The celery executor: attempts travel through a broker (Redis or RabbitMQ) to
`dagwatch worker` processes on any number of machines."""

from engine.execution.celery.executor import CeleryExecutor

__all__ = ["CeleryExecutor"]
