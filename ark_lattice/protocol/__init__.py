"""Protocol cores: pure, sans-I/O state machines that take bytes in and give bytes out."""
