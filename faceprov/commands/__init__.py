"""CLI command groups (typer sub-apps) registered by faceprov/cli.py."""
