"""The frames topic's Kafka consumer: Faust's aiokafka consumer, with the broker's wait bounded.

aiokafka keeps one fetch request in flight per broker, and asks again for a partition only
once it has handed over everything of that partition's last fetch. So a fetch often asks
for a few partitions only, and if those have nothing new, the broker holds it until data
comes or ``fetch.max.wait.ms`` passes — 1.5 s, which Faust sets and does not let an app
change. Meanwhile the frames waiting in the broker's other partitions are not fetched. A
worker catching up on a backlog (after a restart, or in bench/worker.py, where partitions
end at different offsets) stalled for 1.5 s at a time, and a live worker whose partitions
are unevenly busy waits on its quiet ones. Bounding the wait (``worker.fetch_wait_ms``)
costs an empty fetch round trip per wait when all partitions are quiet.
"""

from __future__ import annotations

import aiokafka
import faust
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport


def bound_fetch_wait(app: faust.App, fetch_wait_ms: int) -> None:
    """Make ``app``'s Kafka consumer ask the broker to answer each fetch within ``fetch_wait_ms``.

    Call it before the app starts: the consumer is made when the worker starts.
    """

    class BoundedWaitConsumerThread(AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Transport) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            # aiokafka hands this to its fetcher when the consumer starts, which is after this.
            consumer._fetch_max_wait_ms = fetch_wait_ms
            return consumer

    class BoundedWaitConsumer(Consumer):
        def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
            return BoundedWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)

    app.transport.Consumer = BoundedWaitConsumer
