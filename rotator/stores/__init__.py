"""Stores: where keys are published and rotation state is kept. Backends are imported lazily."""
