"""Celery app and tasks; arrives with the service."""
