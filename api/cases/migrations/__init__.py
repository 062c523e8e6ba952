"""Alembic migrations of the review database (applied at start-up and by `unet3d review migrate`)."""
