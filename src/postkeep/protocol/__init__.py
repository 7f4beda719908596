"""Sans-IO protocol cores: bytes in, typed events out. Never import asyncio, the store or config."""
