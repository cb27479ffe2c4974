"""The example Django project that offloads a few tasks to leek."""
