"""Jobs: durable queued jobs and local in-process jobs."""
