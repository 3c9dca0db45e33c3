"""What runs unattended: the embedded runner (APScheduler) and the leases that keep one
worker per job; later the worker pool and the HTTP service."""
