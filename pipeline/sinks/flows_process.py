"""FlowTopicSink: the flows topic, written by a child process.

Rendering a million JSON records and handing each to the Kafka producer costs a few
microseconds per record of Python, under the GIL the worker's consumer and aggregation
need. So the worker sends each batch of flow-record tables (the same Arrow tables the store
gets, as IPC messages of at most ``CHUNK_ROWS`` rows, so neither side ever holds a whole
million-record close twice) to a child process that renders and produces them, and answers
once Kafka has acknowledged every record. The worker process keeps only a pipe end.

The child is started with ``spawn`` (never fork a process that has chDB and threads open),
exits when the pipe closes (also when the worker is killed), and is started again on the
next write after it died; a write it did not confirm raises :class:`SinkError`, so the
worker keeps the batch and its frames unacknowledged and writes them again.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import orjson
import pyarrow as pa

from flowlogs.errors import FlowLogsError
from flowlogs.malloc import configure_allocators, release_free_memory
from flowlogs.settings import Settings
from pipeline.sinks.topic import FlowRecordProducer, SinkError

log = logging.getLogger(__name__)

_ANSWER_GRACE_SECONDS = 30.0  # on top of the delivery timeout: rendering and IPC
# Smaller chunks, less held at once: over twelve writes of 250 k records the producer process
# peaked at 223 MB with 32 k-row chunks against 264–283 with 131 k, at the same 135–145 k
# records/s; over six, at 227–234 MB with 8 k-row chunks against 253–254 with 32 k, at
# 196–201 k records/s against 185–188 k (4 k: 151–165 k records/s).
CHUNK_ROWS = 8_192


class FlowTopicSink:
    """Publishes flow records as JSON on the flows topic, from a child process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        """The producer process's pid while it runs (it starts on the first write)."""
        process = self._process
        return process.pid if process is not None and process.is_alive() else None

    def _start(self) -> Connection:
        if self._conn is not None and self._process is not None and self._process.is_alive():
            return self._conn
        self.stop()
        parent, child = multiprocessing.get_context("spawn").Pipe()
        process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(self.settings, child), name="flowlogs-flows-producer", daemon=True
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent
        return parent

    def write(self, tables: Sequence[pa.Table], timeout: float = 60.0) -> None:
        """Produce every record of ``tables``; returns once Kafka acknowledged them all."""
        chunks = [t.slice(at, CHUNK_ROWS) for t in tables for at in range(0, t.num_rows, CHUNK_ROWS)]
        if not chunks:
            return
        rows = sum(t.num_rows for t in tables)
        conn = self._start()
        try:
            conn.send_bytes(orjson.dumps({"timeout": timeout, "chunks": len(chunks)}))
            for chunk in chunks:
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, chunk.schema) as writer:
                    writer.write_table(chunk)
                conn.send_bytes(sink.getvalue())
            if not conn.poll(timeout + _ANSWER_GRACE_SECONDS):
                raise SinkError(f"the flows-topic producer process did not confirm {rows} records within {timeout:.0f} s")
            answer = orjson.loads(conn.recv_bytes())
        except (OSError, EOFError) as exc:
            self.stop()
            raise SinkError(f"the flows-topic producer process is gone ({exc!r}); it is restarted on the next write") from exc
        except SinkError:
            self.stop()
            raise
        if "error" in answer:
            raise SinkError(answer["error"])
        if answer["rows"] != rows:
            raise SinkError(f"the flows-topic producer confirmed {answer['rows']} of {rows} records")

    def stop(self) -> None:
        """Close the pipe; the child flushes what it holds and exits."""
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            conn.close()
        if process is not None:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)


def _serve(settings: Settings, conn: Connection) -> None:
    """The child: requests of (options, N Arrow IPC chunks) in, one JSON answer each out."""
    configure_allocators(settings.worker)
    producer = FlowRecordProducer(settings)
    trim_every, trimmed_at = settings.worker.malloc_trim_seconds, time.monotonic()
    while True:
        rows, error = 0, None
        try:
            options = orjson.loads(conn.recv_bytes())
            for _ in range(int(options["chunks"])):
                data = conn.recv_bytes()  # every chunk is read, even after an error, to stay in step
                if error is None:
                    try:
                        rows += producer.produce(pa.ipc.open_stream(data).read_all())
                    except (FlowLogsError, pa.ArrowInvalid) as exc:
                        error = str(exc)
        except EOFError:
            return  # the worker closed the pipe or died
        if error is None:
            try:
                producer.flush(float(options["timeout"]))
            except FlowLogsError as exc:
                error = str(exc)
        conn.send_bytes(orjson.dumps({"error": error} if error else {"rows": rows}))
        if trim_every > 0:
            # The rendered records are gone: give their pages back now if the last time was
            # long enough ago, else once that long has passed without a request.
            wait = trimmed_at + trim_every - time.monotonic()
            if wait <= 0 or not conn.poll(wait):
                release_free_memory()
                trimmed_at = time.monotonic()
