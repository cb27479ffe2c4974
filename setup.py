"""Packaging for leek: `pip install -e .` (add `[test]` for the test tools).

`[tasks]` brings the django-tasks backport, for leek's Django Tasks backend on Django 5.2
(Django 6 has `django.tasks` built in).
"""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="leek",
    version="2.0.0.dev0",
    description="Background tasks for Django with nothing to install: no Redis, no broker.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["leek", "leek.*"]),
    include_package_data=True,
    python_requires=">=3.11",
    install_requires=["Django>=5.2", "psutil>=5.9", "cronsim>=2.6"],
    extras_require={
        "postgres": ["psycopg[binary]>=3.1"],
        # Builds against the MySQL/MariaDB client library (default-libmysqlclient-dev).
        "mysql": ["mysqlclient>=2.2"],
        "tasks": ["django-tasks>=0.12"],
        "test": [
            "pytest>=8",
            "hypothesis>=6",
            "psycopg[binary]>=3.1",
            "ruff>=0.6",
            "django-tasks>=0.12",
            # Prometheus's own parser reads the metrics view in the tests.
            "prometheus_client>=0.20",
            # Drives headless Chromium in the live page's browser test.
            "selenium>=4.20",
        ],
    },
    classifiers=[
        "Framework :: Django",
        "Framework :: Django :: 5.2",
        "Framework :: Django :: 6.0",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    ],
)
