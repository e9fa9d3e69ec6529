"""Where training runs: executor interface, dispatcher, local process pool, worker, tasks."""
