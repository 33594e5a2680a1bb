"""Kafka adapters: producer, topic admin and the consumer-group processor."""
