"""Review cases that last: a volume, its mask revisions and its verdicts in a database (SQLite or PostgreSQL).

Not to be confused with `api/review.py`, the UI's state for the one scan on screen. The map:
`tables` + `migrations/` (schema), `database` (engines, migrating), `files` (content-addressed volumes and masks),
`store` (SQL, compare-and-set), `masks` (label checks, changes), `service` (the three together), `users` + `access`
(who is who), `routes` + `http` (the HTTP API), `export` (reviews.csv), `importer` + `cli` (`unet3d review`,
`unet3d users`).
"""
