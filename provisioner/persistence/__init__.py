"""The persistence room: the provisioner's own tables, their versioned migrations and the queries on them.

``migrations/NNN_name.sql`` are applied in order by ``provisioner.db.migrate``; a file's name is its version, so a
file is never renamed or edited once released (a database that applied it would not apply it again).
"""
