"""Runs the series' notebooks for make: parameter checks, quiet papermill runs, stamps over each one's inputs."""
