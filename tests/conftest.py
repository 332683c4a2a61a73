"""Shared fixtures: real services (PostgreSQL, S3 servers, a portal stand-in) for every test module."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.s3",
    "tests.fixtures.seaweed",
    "tests.fixtures.portal",
    "tests.fixtures.spark",
]
