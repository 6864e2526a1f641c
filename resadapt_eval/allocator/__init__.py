"""The ResAdapt Allocator: a small learned policy that sets each chunk's resolution before encoding."""
