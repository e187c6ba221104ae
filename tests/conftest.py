pytest_plugins = ["tests.redis_support"]
