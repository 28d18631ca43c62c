"""Where flow records go: the ClickHouse store and Kafka topics.

A sink's ``write`` returns only once what it was given is durable (inserted, or
acknowledged by the brokers); the worker acknowledges frames after that, never before.
"""
