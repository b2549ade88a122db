"""Relay Pub/Sub messages to Google Cloud Workflows callback endpoints."""
